#!/bin/sh
# The front image's build step (docker/front/Dockerfile runs it): every file of static/ gets its content
# hash in its name (style.css -> style.<12 hex>.css), index.html is rewritten to those names and given
# the release and revision, and assets.txt lists the names (what a newer web task copies from this one).
# usage: build.sh SRC_DIR OUT_DIR VERSION REVISION
set -eu
src=$1 out=$2 version=$3 revision=$4
mkdir -p "$out/static" "$out/html"
cp "$src/index.html" "$out/html/index.html.tmp"
: > "$out/assets.txt"
for f in "$src"/static/*; do
  [ -f "$f" ] || continue
  name=$(basename "$f")
  case $name in
    *.*) stem=${name%.*} ext=.${name##*.} ;;
    *) stem=$name ext= ;;
  esac
  hash=$(sha256sum "$f" | cut -c1-12)
  fp="$stem.$hash$ext"
  cp "$f" "$out/static/$fp"
  echo "$fp" >> "$out/assets.txt"
  sed -i "s#/static/$name\"#/static/$fp\"#g" "$out/html/index.html.tmp"
done
sed -e "s#@VERSION@#$version#g" -e "s#@REVISION@#$revision#g" "$out/html/index.html.tmp" > "$out/html/index.html"
rm "$out/html/index.html.tmp"
if grep -n '/static/[^"]*"' "$out/html/index.html" | grep -v -f "$out/assets.txt"; then
  echo "build.sh: index.html names an asset that is not in static/" >&2
  exit 1
fi
