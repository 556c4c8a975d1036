#include "keymanager/keymanager.h"

#include "keymanager/km_client.h"
#include "keymanager/km_keys.h"
#include "keymanager/km_token.h"

apim_rc keymanager_init(apim_ctx *ctx)
{
	apim_rc rc = km_keys_init(ctx);
	if (rc == APIM_OK)
		rc = km_client_migrate(ctx);
	if (rc == APIM_OK)
		rc = km_token_migrate(ctx);
	if (rc == APIM_OK)
		km_token_install_bearer(ctx);
	return rc;
}

void keymanager_routes(http_server *s)
{
	km_keys_routes(s);
	km_client_routes(s);
	km_token_routes(s);
}

void keymanager_shutdown(void)
{
	km_token_shutdown();
	km_keys_shutdown();
}
