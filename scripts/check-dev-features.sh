#!/usr/bin/env bash
# Fails when a dev-dependency switches on a feature of a crate that the `pail` binary also uses.
#
# Cargo unifies the features of dev-dependencies into the binary it builds for `cargo test`,
# but not into `cargo build` / `cargo run`. A feature the binary needs at run time that only a
# dev-dependency enables makes every test pass on a binary no user gets (arrow's `chrono-tz`
# once did exactly that: the shipped binary could not write a UTC timestamp). Each such
# feature is listed here, with why it is harmless, in scripts/dev-features.allow; anything else
# fails: enable it in [dependencies] if the binary needs it.
set -euo pipefail
cd "$(dirname "$0")/.."
# sort and join must collate alike.
export LC_ALL=C

features() {
  # One "crate version feature" line per enabled feature, for the given dependency kinds.
  cargo tree --locked --quiet -e "$1" --prefix none -f '{p}|{f}' |
    sed -e 's/ (\*)$//' -e 's/ (proc-macro)//' -e 's/ (\/[^)]*)//' |
    awk -F'|' '{ n = split($2, f, ","); for (i = 1; i <= n; i++) if (f[i] != "") print $1, f[i] }' |
    sort -u
}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
features normal,build >"$tmp/shipped"
features normal,build,dev >"$tmp/tested"
# Features only the test build has, of crates (name and version) the shipped binary also
# contains, as "crate feature".
comm -13 "$tmp/shipped" "$tmp/tested" | awk '{ print $1 "@" $2, $3 }' | sort >"$tmp/extra"
cargo tree --locked --quiet -e normal,build --prefix none -f '{p}' |
  awk '{ print $1 "@" $2 }' | sort -u >"$tmp/crates"
join "$tmp/crates" "$tmp/extra" | awk '{ split($1, c, "@"); print c[1], $2 }' | sort -u >"$tmp/added"
sed -e 's/#.*//' -e '/^[[:space:]]*$/d' scripts/dev-features.allow | awk '{ print $1, $2 }' | sort -u >"$tmp/allowed"
comm -23 "$tmp/added" "$tmp/allowed" | sed 's/^/  /' >"$tmp/bad"
if [ -s "$tmp/bad" ]; then
  echo "check-dev-features: dev-dependencies enable features the release binary does not get:" >&2
  cat "$tmp/bad" >&2
  echo "enable them in [dependencies] if \`pail\` needs them at run time; otherwise list them," \
    "with the reason, in scripts/dev-features.allow" >&2
  exit 1
fi
echo "check-dev-features: $(wc -l <"$tmp/added") feature(s) only the test build has, all in scripts/dev-features.allow"
