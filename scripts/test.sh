#!/usr/bin/env bash
# The whole test suite on a fresh Debian or Ubuntu machine: installs what the
# tests drive (Debian packages, Deno from npm, the npm packages of deno.lock),
# then runs `deno task check` and `deno task test`. CI runs exactly this
# (.ci/run). Packages are installed as root, or with `sudo -n`.
set -euo pipefail
cd "$(dirname "$0")/.."

DENO_VERSION=$(sed -n 's/^DENO_VERSION=//p' scripts/cw)
export DEBIAN_FRONTEND=noninteractive

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; else sudo -n "$@"; fi
}

# Debian packages the tests drive, each with what needs it
need=(
  tmux:tmux                        # attach tests: real terminals
  ssh:openssh-client               # the SSH gateway tests
  ssh-keygen:openssh-client
  scp:openssh-client               # ... scp and sftp through the gateway
  sftp:openssh-client
  rsync:rsync                      # ... rsync -e ssh
  curl:curl                        # ... a page through ssh -L
  ps:procps
  openssl:openssl                  # test CA + leaf certificates
  prlimit:util-linux               # hostile tests: lowered fd limits
  unshare:util-linux               # the offline start test
  ip:iproute2                      # ... its loopback
  vim:vim                          # screen tests: a real full-screen program
  less:less
  top:procps
  podman:podman                    # the relay container test
  runc:runc
  debootstrap:debootstrap          # ... its local Debian base image
  systemd-analyze:systemd          # the service units are verified
  chromium:chromium                # the web client, in a real browser
)
missing=()
for pair in "${need[@]}"; do
  cmd=${pair%%:*}
  pkg=${pair#*:}
  if ! command -v "$cmd" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$cmd" ] && [ ! -x "/sbin/$cmd" ]; then
    case " ${missing[*]-} " in *" $pkg "*) ;; *) missing+=("$pkg") ;; esac
  fi
done
# SFTP through the gateway: the node runs OpenSSH's SFTP server
if [ ! -x /usr/lib/openssh/sftp-server ]; then
  missing+=(openssh-sftp-server)
fi
# the PostgreSQL store's tests: a private server (scripts/postgres.sh)
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  missing+=(postgresql)
fi
if [ "${#missing[@]}" -gt 0 ]; then
  echo "test.sh: installing ${missing[*]}"
  as_root apt-get update -q
  as_root apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# Deno from npm (the package ships the real binary) when it is missing or another version
if ! command -v deno >/dev/null 2>&1 || ! deno --version | grep -q "^deno ${DENO_VERSION} "; then
  echo "test.sh: installing deno@${DENO_VERSION} from npm"
  as_root npm install -g --allow-scripts=deno "deno@${DENO_VERSION}" 2>/dev/null ||
    as_root npm install -g "deno@${DENO_VERSION}"
  hash -r
fi
deno --version

# npm packages pinned in deno.json / deno.lock
deno install --frozen

deno task check

# a private PostgreSQL for the replica tests, stopped however the run ends
pg_dir=$(mktemp -d /tmp/cw-ci-pg.XXXXXX)
trap 'bash scripts/postgres.sh stop "$pg_dir"' EXIT
if CW_TEST_POSTGRES_URL=$(bash scripts/postgres.sh start "$pg_dir"); then
  export CW_TEST_POSTGRES_URL
  echo "test.sh: PostgreSQL on ${CW_TEST_POSTGRES_URL##*@}"
else
  echo "test.sh: PostgreSQL did not start; its tests will say SKIPPED" >&2
fi

deno task test
