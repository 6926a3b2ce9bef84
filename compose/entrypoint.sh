#!/bin/sh
# The image's entry point: every JOBTRAIL_<NAME>_FILE variable (a secret mounted by compose
# under /run/secrets) becomes JOBTRAIL_<NAME> with the file's content (trailing newline
# dropped), then the command runs. The convention of the official postgres and rabbitmq images;
# the secrets stay out of `docker inspect` and the compose file.
set -eu
for name in $(env | sed -n 's/^\(JOBTRAIL_[A-Za-z0-9_]*\)_FILE=.*$/\1/p'); do
    file=$(printenv "${name}_FILE")
    if [ ! -r "$file" ]; then
        echo "jobtrail-entrypoint: ${name}_FILE names $file, which cannot be read" >&2
        exit 64
    fi
    value=$(cat "$file")
    export "$name=$value"
    unset "${name}_FILE"
done
exec "$@"
