#!/usr/bin/env bash
# Start a throwaway PostgreSQL cluster on a free loopback port; print the URL for the tests,
# then the command that stops it and removes its data.
set -euo pipefail
cd /  # the postgres user cannot enter the caller's (private) directory
bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
data=$(mktemp -d /tmp/certwatch-pg.XXXXXX)
chown postgres "$data"
runuser -u postgres -- "$bin/initdb" -D "$data" -A trust -U postgres >/dev/null
runuser -u postgres -- "$bin/pg_ctl" -D "$data" -l "$data/log" -w \
  -o "-p $port -k $data -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200" start >/dev/null
echo "postgresql+psycopg://postgres@127.0.0.1:$port/postgres"
echo "cd / && runuser -u postgres -- $bin/pg_ctl -D $data -m immediate stop >/dev/null; rm -rf $data"
