#!/usr/bin/env bash
# `pnpm test`: every package's tests in two lanes side by side, and the packages' check.
#
# Why two lanes: the balancer's suite (real clusters under faults, one file at a time) is about
# three quarters of the time and keeps well under two cores busy on average; the other packages'
# suites together take a few minutes. One after another (turbo --concurrency=1) the whole run took
# ~850 s of tests on a 2-core machine; turbo --concurrency=2 saved ~100 s but starts the balancer
# late (turbo orders tasks by the package graph, the balancer near its end). Here the balancer
# starts at once and the other packages run one at a time beside it.
#
# The balancer's longest files (about 40% of its time) run in the second lane once the other
# packages are done, so that the lanes end together (the balancer lane alone took ~750 s of a
# ~890 s run; split so, both lanes took ~600 s). Both lanes keep two suites running at a time, as
# before. Once the late files got faster (replication-recovery ~115 s to ~55 s, data-model ~66 s
# to ~45 s; crash-migration in the first lane ~15 s), versions (~33 s) moved to the late files to
# keep the lanes ending together (each ~45 s shorter than before, by the files' own times).
# Once the other packages' suites took ~120 s less (one worker without isolation, cheaper
# assertions: 337 s to 218 s), the balancer lane ended ~60 s after the other; direct-routing
# (~30 s) moved to the late files.
#
# Packages are built first, once, and the lanes run their test tasks alone (--only): two turbo
# processes each running the build dependencies could restore a package's dist/ while the other
# lane's tests import it.
#
# The packages' check (publint, attw, consumers compiled and run: ~70 s of one core) ran after
# both lanes and made the run ~900 s; it runs beside the late files instead, on the CPU the
# balancer's suites leave idle. It reads the built dist/ and writes only to a temporary directory
# (`pnpm pack --pack-destination`; no package has a pack script), so it runs the script itself,
# not `pnpm check:packages`, whose `turbo run build` could replay cached outputs into dist/.
set -uo pipefail
cd "$(dirname "$0")/.."

turbo run build --output-logs=errors-only || exit 1

late=(
  test/replication-pressure.test.ts
  test/replication-ring-change.test.ts
  test/replication-recovery.test.ts
  test/data-model.test.ts
  test/bank-transactions.test.ts
  test/versions.test.ts
  test/direct-routing.test.ts
)
excluded=()
for file in "${late[@]}"; do excluded+=(--exclude "$file"); done

(cd packages/balancer && pnpm exec vitest run "${excluded[@]}") &
balancer_lane=$!
turbo run test --only --filter='!@dstore/balancer' --concurrency=1
others_status=$?
pnpm exec tsx scripts/check-packages.ts &
packages_check=$!
(cd packages/balancer && pnpm exec vitest run "${late[@]}")
late_status=$?
wait "$balancer_lane"
balancer_status=$?
wait "$packages_check"
packages_status=$?

if [ "$others_status" -ne 0 ] || [ "$balancer_status" -ne 0 ] || [ "$late_status" -ne 0 ] || [ "$packages_status" -ne 0 ]; then
  echo "test: failed (balancer lane exit $balancer_status, other packages exit $others_status, balancer's late files exit $late_status, packages' check exit $packages_status)" >&2
  exit 1
fi
