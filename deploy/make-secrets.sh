#!/usr/bin/env bash
# Makes the secret files deploy/compose.yaml expects, random and consistent with one another,
# in deploy/secrets/ (or the folder given). Refuses to overwrite: the secret key and the
# passwords of a running stack must not change under it (the database's sealed signing keys
# open only with the secret key they were sealed under).
set -euo pipefail
dir=${1:-"$(dirname "$0")/secrets"}
mkdir -p "$dir"
chmod 700 "$dir"
for name in secret.key cargohold.yaml s3-credentials postgres-password minio-root-user minio-root-password; do
  if [ -e "$dir/$name" ]; then
    echo "make-secrets: $dir/$name exists; remove the folder's files to make new ones" >&2
    exit 1
  fi
done
umask 077
random() { head -c "$1" /dev/urandom | base64 | tr -d '\n/+=' | head -c "$2"; }
db_password=$(random 48 40)
s3_user=cargohold$(random 12 8)
s3_password=$(random 48 40)
head -c 32 /dev/urandom | base64 > "$dir/secret.key"
printf '%s' "$db_password" > "$dir/postgres-password"
printf 'database: postgresql://cargohold:%s@postgres:5432/cargohold\n' "$db_password" > "$dir/cargohold.yaml"
printf '%s' "$s3_user" > "$dir/minio-root-user"
printf '%s' "$s3_password" > "$dir/minio-root-password"
printf '[default]\naws_access_key_id = %s\naws_secret_access_key = %s\n' "$s3_user" "$s3_password" \
  > "$dir/s3-credentials"
echo "make-secrets: wrote $(cd "$dir" && pwd)/{secret.key,cargohold.yaml,s3-credentials,postgres-password,minio-root-user,minio-root-password}"
echo "make-secrets: back up secret.key with the database: the signing keys stored there are sealed under it"
