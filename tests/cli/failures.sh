#!/usr/bin/env bash
# Exit codes, fail-fast and keep-going, retries, timeouts, output of failures.
source "$(dirname "$0")/lib.bash"

new_project failfast
cat >vitte.yaml <<'Y'
tasks:
  bad:
    run: echo "the compiler says no" >&2; exit 3
  slow:
    run: sleep 0.3; echo slow >> ran.log
  after_bad:
    deps: [bad]
    run: echo after_bad >> ran.log
  independent:
    deps: [slow]
    run: echo independent >> ran.log
  build:
    deps: [after_bad, independent]
Y
vt run -j 2
expect_rc 1 "a failed task"
expect_out "FAILED: bad: exit status 3" "the failure and its status"
expect_out "the compiler says no" "the failing command's output, in full"
expect_out '\$ echo "the compiler says no"' "the failing command"
check "after a failure nothing more starts" [ "$(count_lines ran.log independent)" = 0 ]
check "what was running finished" [ "$(count_lines ran.log slow)" = 1 ]
check "its output is saved" grep -q "the compiler says no" .vitte/logs/bad.log

rm -f ran.log
vt run -k -j 2
expect_rc 1 "keep going still fails"
check "keep going runs what does not depend on the failure" [ "$(count_lines ran.log independent)" = 1 ]
check "but not what does" [ "$(count_lines ran.log after_bad)" = 0 ]
expect_out "1 failed, 2 skipped" "summary counts"

# Retries: fails twice, then succeeds.
new_project retries
cat >vitte.yaml <<'Y'
tasks:
  build:
    run: echo try >> tries.log; test "$(wc -l < tries.log)" -ge 3
    retries: 2
Y
vt build
expect_rc 0 "succeeds on its third attempt"
check "three attempts" [ "$(count_lines tries.log try)" = 3 ]
expect_out "retrying: build \(attempt 1 of 3\)"
rm tries.log
sed -i 's/retries: 2/retries: 1/' vitte.yaml
vt build
expect_rc 1 "one retry is not enough"
check "two attempts" [ "$(count_lines tries.log try)" = 2 ]

# Timeouts: the whole process group is killed, a child it left in the
# background too.
new_project timeout
cat >vitte.yaml <<'Y'
tasks:
  build:
    run: sleep 300 & echo $! > child.pid; sleep 300
    timeout: 300ms
Y
vt build
expect_rc 1 "a timeout fails"
expect_out "FAILED: build: timed out after 0.3 s"
child=$(cat child.pid)
for _ in $(seq 50); do kill -0 "$child" 2>/dev/null || break; sleep 0.1; done
check "its background child was killed with it" bash -c "! kill -0 $child 2>/dev/null"

# A command that cannot start.
new_project notfound
cat >vitte.yaml <<'Y'
tasks:
  build:
    run: no-such-program-vitte --flag
Y
vt build
expect_rc 1
expect_out "command not found: no-such-program-vitte"

# Killed by a signal.
new_project signal
cat >vitte.yaml <<'Y'
tasks:
  build:
    run: kill -TERM $$
Y
vt build
expect_rc 1
expect_out "killed by signal 15"

finish
