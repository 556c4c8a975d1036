#include "devportal/devportal.h"

#include "devportal/devportal_internal.h"

apim_rc devportal_migrate(apim_ctx *ctx)
{
	apim_rc rc = devportal_discovery_migrate(ctx);
	if (rc == APIM_OK)
		rc = devportal_app_migrate(ctx);
	return rc;
}

void devportal_routes(http_server *s)
{
	devportal_discovery_routes(s);
	devportal_app_routes(s);
}
