#!/bin/sh
# web's entrypoint: fills in nginx.conf, copies the fingerprinted assets of the web tasks already running
# (the release being replaced: a page it rendered then finds its assets here too), then becomes nginx
# (exec: the stop signal, SIGQUIT, reaches nginx itself and stops it gracefully).
set -eu
UPSTREAM=${UPSTREAM:-tasks.phpha}
FILES=${FILES:-tasks.phpfiles}
UPSTREAM_PORT=${UPSTREAM_PORT:-8000}
PEERS=${PEERS:-tasks.web}
PORT=${PORT:-8080}
RUN=/run/front
mkdir -p "$RUN/body" "$RUN/proxy"
chown www-data "$RUN/body" "$RUN/proxy"

# Swarm's DNS knows the web tasks already running; this one joins it only once healthy. An asset name is
# accepted only when it is a plain file name; anything that fails is skipped (the page still works: a
# missing asset is asked of the other web tasks, see @peers in nginx.conf).
for peer in $(getent ahostsv4 "$PEERS" 2>/dev/null | awk '{print $1}' | sort -u); do
  list=$(curl -fsS --max-time 2 "http://$peer:$PORT/_front/assets") || { echo "web: no asset list from $peer" >&2; continue; }
  got=0
  for f in $list; do
    case $f in ""|.*|*[!A-Za-z0-9._-]*) continue ;; esac
    [ -e "/front/static/$f" ] && continue
    if curl -fsS --max-time 2 -o "/front/static/.$f.part" "http://$peer:$PORT/static/$f"; then
      mv "/front/static/.$f.part" "/front/static/$f" && got=$((got + 1))
    else
      rm -f "/front/static/.$f.part"
    fi
  done
  echo "web: copied $got asset(s) of the running release from $peer" >&2
done

sed -e "s#@UPSTREAM@#$UPSTREAM#g" -e "s#@FILES@#$FILES#g" -e "s#@UPSTREAM_PORT@#$UPSTREAM_PORT#g" -e "s#@PEERS@#$PEERS#g" \
    -e "s#@PORT@#$PORT#g" /front/nginx.conf > "$RUN/nginx.conf"
exec nginx -c "$RUN/nginx.conf" -g "daemon off;"
