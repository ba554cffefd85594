#!/usr/bin/env bash
# Creates the six Payloop service databases, each owned by its own login role, on the first start
# of the postgres image (it runs /docker-entrypoint-initdb.d/* once, on an empty data directory).
#
#   database payloop_<service>, owner role payloop_<service>, password from <SERVICE>_DB_PASSWORD
#
# Each role owns only its database and PUBLIC may not connect to it, so one service cannot read
# another's tables (DESIGN.md section 2). The owner may create in the `public` schema (PostgreSQL 15+),
# which is all `python -m payloop_<service> migrate` needs. Passwords must be URL-safe: they are
# also written into PAYLOOP_<SERVICE>_DATABASE_URL. On a plain server, run this script once as a
# superuser with PGHOST/PGPORT/PGUSER set and the six <SERVICE>_DB_PASSWORD variables exported.
set -euo pipefail

create_service_database() {
    local service="$1"
    local name="payloop_${service}"
    local password_var
    password_var="$(printf '%s' "${service}" | tr '[:lower:]' '[:upper:]')_DB_PASSWORD"
    local password="${!password_var:-}"
    if [[ -z "${password}" ]]; then
        echo "10-payloop-databases.sh: ${password_var} is not set" >&2
        exit 1
    fi
    echo "10-payloop-databases.sh: creating role and database ${name}"
    psql -v ON_ERROR_STOP=1 --no-psqlrc --username "${POSTGRES_USER:-postgres}" \
        --dbname "${POSTGRES_DB:-${POSTGRES_USER:-postgres}}" \
        --set=name="${name}" --set=password="${password}" <<'SQL'
CREATE ROLE :"name" LOGIN PASSWORD :'password';
CREATE DATABASE :"name" OWNER :"name" ENCODING 'UTF8';
REVOKE ALL ON DATABASE :"name" FROM PUBLIC;
SQL
}

create_service_database tenants
create_service_database psa_ingest
create_service_database payments
create_service_database collections
create_service_database gl_posting
create_service_database reporting
