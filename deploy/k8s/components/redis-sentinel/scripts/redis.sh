# A Redis node: a replica of the current primary, or the primary itself when the Sentinels say so
# (or on the very first start, redis-0). Its name: BANDVOTE_REDIS_NODE, else HOSTNAME.redis (a pod of
# the headless Service).
set -eu
umask 077
me="${BANDVOTE_REDIS_NODE:-$(hostname).redis}"
printf 'requirepass "%s"\nmasterauth "%s"\nreplica-announce-ip %s\n' \
  "$REDISCLI_AUTH" "$REDISCLI_AUTH" "$me" > /run/redis/auth.conf
primary=$(sh /scripts/primary.sh)
if [ "$primary" != "$me" ]; then
  printf 'replicaof %s 6379\n' "$primary" >> /run/redis/auth.conf
fi
exec redis-server /etc/redis/redis.conf
