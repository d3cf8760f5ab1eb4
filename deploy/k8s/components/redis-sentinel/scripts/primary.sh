# Prints the primary as HOST (the Sentinels' view), or redis-0.redis on a first start.
# Run by redis.sh and sentinel.sh, in the production overlay's pods and in compose's redis-sentinel.yml.
for sentinel in redis-0.redis redis-1.redis redis-2.redis; do
  primary=$(env -u REDISCLI_AUTH redis-cli -h "$sentinel" -p 26379 --raw \
    sentinel get-master-addr-by-name bandvote 2>/dev/null | head -n 1)
  if [ -n "$primary" ]; then echo "$primary"; exit 0; fi
done
echo redis-0.redis
