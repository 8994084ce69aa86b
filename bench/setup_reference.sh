#!/usr/bin/env bash
# Creates the reference venv used by bench/compare_zaqar.sh: OpenStack Zaqar 23 (zaqar-server)
# and zaqar-bench with everything it imports, from PyPI. Kept apart from the project's venv
# (Zaqar pulls the oslo.* stack, gevent and its own falcon).
#
#   bench/setup_reference.sh [VENV_DIR]      default: bench/.venv-zaqar (or $ZAQAR_REF_VENV)
#
# Safe to run again: it does nothing when the venv already holds the same package set.
# Versions: the set below was verified on CPython 3.11 (Debian, x86_64). It is applied as pip
# constraints; if it cannot be satisfied on this Python, the script says so and installs the
# newest versions instead. ZAQAR_REF_CONSTRAINTS=none skips the pins from the start.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
venv=${1:-${ZAQAR_REF_VENV:-$here/.venv-zaqar}}

packages=(zaqar gevent marktime python-zaqarclient openstacksdk redis pymongo)

# pip freeze of a working install (zaqar 23.0.1, python-zaqarclient 4.7.0, CPython 3.11).
read -r -d '' pins <<'EOF' || true
alembic==1.20.1
attrs==26.1.0
autobahn==26.10.2
autopage==0.6.0
bcrypt==5.0.0
cbor2==6.3.0
certifi==2026.10.19.post1
cffi==2.1.1
charset-normalizer==3.5.3
cliff==4.17.0
cmd2==4.3.1
cryptography==50.0.2
debtcollector==3.1.0
decorator==5.3.1
dnspython==2.9.2
dogpile.cache==1.5.0
falcon==4.4.0
fasteners==0.20
futurist==3.5.0
gevent==26.9.0
greenlet==3.5.6
hyperlink==21.0.0
idna==3.20
iso8601==2.1.0
Jinja2==3.1.6
jmespath==1.1.0
jsonpatch==1.48
jsonpointer==3.12
jsonschema==4.26.0
jsonschema-specifications==2025.9.1
keystoneauth1==5.18.1
keystonemiddleware==13.0.1
Mako==1.4.3
markdown-it-py==4.3.0
marktime==0.2.0
MarkupSafe==3.0.4
mdurl==0.1.2
msgpack==1.2.4
netaddr==1.3.0
openstacksdk==4.22.0
os-service-types==1.9.0
osc-lib==4.7.0
oslo.cache==4.3.0
oslo.concurrency==7.6.1
oslo.config==10.7.0
oslo.context==6.5.0
oslo.db==18.1.1
oslo.i18n==6.9.0
oslo.log==8.3.2
oslo.middleware==8.2.0
oslo.policy==6.0.1
oslo.reports==3.9.0
oslo.serialization==5.11.0
oslo.upgradecheck==2.8.0
oslo.utils==10.2.0
osprofiler==4.4.0
packaging==26.4
pbr==7.1.3
platformdirs==4.14.8
prettytable==3.18.0
prompt_toolkit==3.0.53
psutil==7.2.2
pycadf==4.1.0
pycparser==3.12
Pygments==2.21.0
PyJWT==2.15.1
pymongo==4.20.1
pyparsing==3.3.3
pyperclip==1.11.0
python-dateutil==4.0.0
python-keystoneclient==6.0.0
python-swiftclient==4.11.0
python-zaqarclient==4.7.0
PyYAML==6.0.4
redis==8.1.0
referencing==0.37.0
requests==2.34.2
rfc3986==2.0.0
rich==15.0.0
rich-argparse==1.8.0
rpds-py==2026.9.1
SQLAlchemy==2.1.9
statsd==4.0.1
stevedore==5.10.0
testresources==2.1.2
testscenarios==0.7.0
txaio==26.6.1
typing_extensions==4.16.0
tzdata==2026.6
ujson==6.1.0
urllib3==2.8.0
wcwidth==0.9.4
WebOb==1.8.11
wrapt==2.5.2
zaqar==23.0.1
zope.event==6.2
zope.interface==8.7
EOF

pick_python() {
  # Zaqar 23 is tested on 3.10-3.12; prefer those, accept any 3.10+.
  for cand in "${PYTHON:-}" python3.11 python3.12 python3.13 python3; do
    [ -n "$cand" ] || continue
    if command -v "$cand" >/dev/null 2>&1 &&
       "$cand" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
      echo "$cand"; return 0
    fi
  done
  echo "setup_reference: no Python 3.10+ found (set PYTHON=...)" >&2; return 1
}

stamp="$venv/.zaqar-ref-installed"
want="${packages[*]} | ${ZAQAR_REF_CONSTRAINTS:-pinned} | $(printf '%s' "$pins" | cksum)"
check() {
  [ -x "$venv/bin/zaqar-server" ] && [ -x "$venv/bin/zaqar-bench" ] &&
    "$venv/bin/python" -c 'import zaqar.bench.conductor, zaqar.storage.redis.driver, gevent, marktime, zaqarclient, openstack, redis, pymongo' \
      >/dev/null 2>&1
}
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && check; then
  echo "reference venv ready: $venv ($("$venv/bin/python" -m pip show zaqar 2>/dev/null | sed -n 's/^Version: /zaqar /p'))"
  exit 0
fi

if [ ! -x "$venv/bin/python" ]; then
  py=$(pick_python)
  echo "creating $venv with $py ($("$py" --version 2>&1))"
  "$py" -m venv "$venv"
fi
"$venv/bin/python" -m pip install -q --upgrade pip >/dev/null

installed=""
if [ "${ZAQAR_REF_CONSTRAINTS:-pinned}" != none ]; then
  constraints=$(mktemp)
  trap 'rm -f "$constraints"' EXIT
  printf '%s\n' "$pins" >"$constraints"
  echo "installing ${packages[*]} (pinned set) into $venv ..."
  if "$venv/bin/python" -m pip install -q -c "$constraints" "${packages[@]}"; then
    installed=pinned
  else
    echo "setup_reference: the pinned set does not install on this Python; trying the newest versions" >&2
  fi
fi
if [ -z "$installed" ]; then
  echo "installing ${packages[*]} (newest) into $venv ..."
  "$venv/bin/python" -m pip install -q "${packages[@]}"
fi
if ! check; then
  echo "setup_reference: zaqar-server / zaqar-bench or one of their imports is missing in $venv" >&2
  exit 1
fi
printf '%s' "$want" >"$stamp"
echo "reference venv ready: $venv ($("$venv/bin/python" -m pip show zaqar | sed -n 's/^Version: /zaqar /p'))"
