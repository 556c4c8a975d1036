-- PostgreSQL set-up of apim's two databases, with least privilege.
--
--   psql -X -v ON_ERROR_STOP=1 -d postgres \
--        -v apimgt_password="$APIMGT_PW" -v shared_password="$SHARED_PW" \
--        -f deploy/postgresql/setup.sql
--
-- Run once, as a superuser. Only the control-plane nodes (Publisher,
-- Developer Portal, Key Manager) get these credentials: the gateways and
-- the Traffic Managers use no database at all (reference table in
-- docs/DEPLOYMENT.md). apimd creates its tables itself at start (the
-- migrations of each database, under an advisory lock, so that nodes may
-- start together).

-- One login role per database; no superuser, no CREATEDB, no CREATEROLE.
CREATE ROLE apim_apimgt LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE
  NOREPLICATION CONNECTION LIMIT 400 PASSWORD :'apimgt_password';
CREATE ROLE apim_shared LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE
  NOREPLICATION CONNECTION LIMIT 400 PASSWORD :'shared_password';

-- Each database belongs to its role: the owner creates its own tables in
-- the public schema (PostgreSQL 15: the schema belongs to the database owner).
CREATE DATABASE apimgtdb OWNER apim_apimgt ENCODING 'UTF8' TEMPLATE template0;
CREATE DATABASE shareddb OWNER apim_shared ENCODING 'UTF8' TEMPLATE template0;

-- Nobody else may connect to them (PUBLIC has CONNECT and TEMP by default),
-- and neither role may reach the other's database.
REVOKE ALL ON DATABASE apimgtdb FROM PUBLIC;
REVOKE ALL ON DATABASE shareddb FROM PUBLIC;
GRANT CONNECT, TEMPORARY ON DATABASE apimgtdb TO apim_apimgt;
GRANT CONNECT, TEMPORARY ON DATABASE shareddb TO apim_shared;

-- The default database stays closed to them too.
REVOKE CONNECT ON DATABASE postgres FROM PUBLIC;
