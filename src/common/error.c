#include "common/error.h"

const char *apim_strerror(apim_rc rc)
{
	switch (rc) {
#define APIM_X(name, value, status, msg) \
	case APIM_##name:                \
		return msg;
		APIM_ERRNO_MAP(APIM_X)
#undef APIM_X
	}
	return "unknown error";
}

int apim_rc_http_status(apim_rc rc)
{
	switch (rc) {
#define APIM_X(name, value, status, msg) \
	case APIM_##name:                \
		return status;
		APIM_ERRNO_MAP(APIM_X)
#undef APIM_X
	}
	return 500;
}
