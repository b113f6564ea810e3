#!/usr/bin/env bash
# A device in five minutes: a trust root, the server on embedded defaults, a
# signed bundle, a development board (file slots and the file bootloader)
# enrolled with updraft-agent, a rollout, and check-ins until the update is
# committed. Needs `updraft` and `updraft-agent` on PATH:
#   cargo build --release -p updraft-cli -p updraft-agent && export PATH=$PWD/target/release:$PATH
#   bash examples/quickstart/quickstart.sh [WORK_FOLDER]
# The test suite runs this script (crates/updraft-cli/tests/it/quickstart.rs).
set -euo pipefail
examples=$(cd "$(dirname "$0")/.." && pwd)
work=${1:-$(mktemp -d)}
port=${UPDRAFT_QUICKSTART_PORT:-8080}
mkdir -p "$work" && cd "$work"
echo "== working in $work"

echo "== 1. keys and a trust root: one release key signs bundles, one build key signs provenance"
updraft keys generate --out-dir keys --name release
updraft keys generate --out-dir keys --name build
updraft trust init --pubkey keys/release.pub --threshold 1 --build-pubkey keys/build.pub \
  --expires 365d --sign-with keys/release.key --out root.json

echo "== 2. the server on embedded defaults (SQLite and blobs in ./data); on first start it writes an admin token to data/admin-token"
exec 3< <(exec updraft serve --trust root.json --data-dir data --listen "127.0.0.1:$port" 2>serve.log)
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
read -r token_file <&3     # the first line comes once the server listens: the token file's path
export UPDRAFT_SERVER="http://127.0.0.1:$port" UPDRAFT_TOKEN="$(cat "$token_file")"

echo "== 3. a signed bundle of the new firmware, published"
head -c 1048576 /dev/zero | tr '\0' 'u' > rootfs.img
updraft bundle create --name devboard-fw --version 1.1.0 --family devboard --hardware rev-a \
  --security-version 1 --image rootfs=rootfs.img \
  --sign-with keys/release.key --build-key keys/build.key \
  --source-uri git+https://example.com/devboard-fw.git --source-commit 4b825dc642cb6eb9a060e54bf8d69288fbee4904 \
  --source-date-epoch 1767225600 --out devboard-fw-1.1.0.bundle
updraft release publish devboard-fw-1.1.0.bundle

echo "== 4. a development board: slot A holds the factory image; power on, enroll"
mkdir -p device
cp "$examples/agent-file.toml" device/agent.toml
cp root.json device/root.json
printf 'devboard factory image 1.0.0' > device/slot-a.img
updraft-agent simulate-boot --config device/agent.toml
enroll_token=$(updraft enroll-token create --uses 1 --expires 1h)
updraft-agent enroll --config device/agent.toml --server "$UPDRAFT_SERVER" --token "$enroll_token" --device-id devboard-1

echo "== 5. a rollout to every devboard, and check-ins until the update is committed"
cat > plan.toml <<'PLAN'
[selector]
family = "devboard"

[[waves]]
percent = 100
soak = "1h"
PLAN
updraft rollout create plan.toml --release devboard-fw@1.1.0 --id first
updraft-agent check --config device/agent.toml    # download, verify, write slot B, arm the trial, reboot
updraft-agent check --config device/agent.toml    # the trial boot: health checks pass, commit
updraft devices list                              # a table: status, release, online, last seen
updraft devices show devboard-1                   # inventory, components, history
updraft rollout status first
