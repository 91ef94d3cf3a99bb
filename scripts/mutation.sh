#!/usr/bin/env bash
# Mutation testing (`make mutation`): mutmut changes the matcher
# (worker/matching), the sequence rules (worker/sequences/rules.py) and the
# Salesforce outbox (worker/salesforce/outbox*.py, task_records.py,
# composite_writes.py) one change at a time, and runs
# the tests that execute the changed function ([tool.mutmut] in pyproject.toml).
# A mutant the tests do not notice ("survived") is a test we are missing, or a
# change that makes no difference: each one is looked at.
#
# mutmut writes its mutants next to the code it mutates, so this runs in a copy
# of the committed tree (HEAD: what others changed and did not commit is not
# mutated against), never in the working tree.
#
#   scripts/mutation.sh                          every mutant (~5,500: hours on 2 cores)
#   scripts/mutation.sh 'worker.sequences.rules*'   765 mutants, 285 s on an idle 2-core machine
#
# Prints mutmut's results; exits 0 (survivors are findings to read, not a crash).
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
work="${MUTATION_DIR:-$(mktemp -d /tmp/sightline-mutation-XXXXXX)}"
children="${MUTATION_CHILDREN:-$(nproc)}"

echo "mutation: copying the tree to $work"
mkdir -p "$work"
git -C "$root" archive HEAD | tar -C "$work" -xf -
ln -sfn "$root/.venv" "$work/.venv"

cd "$work"
started=$(date +%s)
.venv/bin/mutmut run --max-children "$children" "$@" | tr '\r' '\n' | grep -v '^[^ ]*Generating\|Running' || true
elapsed=$(( $(date +%s) - started ))
.venv/bin/mutmut results > mutation-survivors.txt || true
survived=$(grep -c ': survived' mutation-survivors.txt || true)
echo "mutation: survivors ($survived), each with 'mutmut show <name>' in $work:"
grep ': survived' mutation-survivors.txt || true
echo "mutation: done in ${elapsed} s, load $(cut -d' ' -f1 /proc/loadavg)"
