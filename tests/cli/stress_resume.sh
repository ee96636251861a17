#!/usr/bin/env bash
# Interrupted runs resume: after Ctrl-C (once: running commands finish;
# twice: they are killed) or kill -9 at a random moment, `vitte run` again
# runs only what had not finished. "Finished" is what vitte reported done:
# it reports a task only once its success is recorded.
source "$(dirname "$0")/lib.bash"

N=24
write_project() {
    {
        echo "tasks:"
        for i in $(seq 1 $N); do
            echo "  t$i:"
            if ((i % 2)); then
                # Half declare an output (up to date by content) ...
                echo "    run: sleep 0.2 && echo t$i >> ran.log && echo t$i > t$i.out"
                echo "    outputs: [t$i.out]"
            else
                # ... half declare no files (resumed by the run they succeeded in).
                echo "    run: sleep 0.2 && echo t$i >> ran.log"
            fi
            ((i > 4)) && echo "    deps: [t$((i - 4))]"
        done
        echo "  build:"
        echo "    deps: [$(seq -s ', ' -f 't%g' $((N - 3)) $N)]"
    } >vitte.yaml
}

# The tasks a run's output reports done ("[k/n] name 0.10s" lines).
reported() {
    awk '/^\[[0-9]+\/[0-9]+\] /{print $2}' "$1" | sort
}

# run_and_signal OUTFILE DELAY:SIGNAL...: starts vitte, sends each signal
# DELAY seconds after the previous step, waits for it.
run_and_signal() {
    local out=$1
    shift
    set -m # its own process group, and SIGINT not ignored in the background
    "$VITTE" run -j 4 >"$out" 2>&1 </dev/null &
    local pid=$!
    set +m
    for step in "$@"; do
        sleep "${step%%:*}"
        kill -s "${step#*:}" "$pid" 2>/dev/null || true
    done
    set +e
    wait "$pid"
    RC=$?
    set -e
}

# The run after an interruption: succeeds, and runs nothing reported done.
check_resume() {
    local what=$1 first=$2
    vt run -j 4
    printf '%s\n' "$OUT" >second.txt
    expect_rc 0 "$what: the resumed run succeeds"
    local again
    again=$(comm -12 <(reported "$first") <(reported second.txt) | tr '\n' ' ')
    check "$what: nothing reported done ran again (again: $again)" [ -z "$again" ]
    # Every command ran to its end at least once (a task can be recorded
    # done and killed before it was reported: it ran, and is not run again).
    local ran
    ran=$(sort -u ran.log | wc -l)
    check "$what: every command ran to its end at least once ($ran of $N)" [ "$ran" = "$N" ]
    # The resumed run succeeded, so a new run begins: the tasks that
    # declare no files run again (they always do), the others are up to date.
    vt run
    expect_out "$((N / 2)) ran, $((N / 2)) up to date" "$what: a third run runs only the tasks without files"
}

new_project sigint_once
write_project
run_and_signal first.txt 0.35:INT
check "Ctrl-C: exit status 130 (got $RC)" [ "$RC" = 130 ]
check "Ctrl-C: the message says it waits" grep -q "interrupted: waiting for" first.txt
# Once: the commands that were running finished and were reported.
check "Ctrl-C once: no command was killed" bash -c "! grep -q 'killed by signal' first.txt"
check_resume "Ctrl-C once" first.txt

# Twice: the commands that run are killed. Long commands here, so that
# they certainly run when the second Ctrl-C comes; it comes once one has
# started.
new_project sigint_twice
{
    echo "tasks:"
    for i in 1 2 3 4; do
        echo "  t$i: {run: 'touch started.t$i && sleep 3 && echo t$i >> ran.log', outputs: [started.t$i]}"
        echo "  u$i: {run: 'echo u$i >> ran.log', deps: [t$i]}"
    done
    echo "  build: {deps: [u1, u2, u3, u4]}"
} >vitte.yaml
set -m
"$VITTE" run -j 4 >first.txt 2>&1 </dev/null &
pid=$!
set +m
for _ in $(seq 100); do compgen -G "started.*" >/dev/null && break; sleep 0.1; done
kill -INT "$pid"
sleep 0.2
kill -INT "$pid"
set +e
wait "$pid"
RC=$?
set -e
check "Ctrl-C twice: exit status 130 (got $RC)" [ "$RC" = 130 ]
check "Ctrl-C twice: running commands killed" grep -q "killing [1-9]" first.txt
check "Ctrl-C twice: none of them finished" [ ! -e ran.log ]
vt run -j 4
expect_rc 0 "Ctrl-C twice: the next run succeeds"
check "Ctrl-C twice: the killed commands ran again, to their end" [ "$(wc -l <ran.log)" = 8 ]

# kill -9 at random moments, a few times over the same project, then a run
# to the end: no reported task ever runs twice. A round may come too late
# (little left, or a slow build such as ASan's): then that run finished,
# and what is checked is that it finished what the killed ones had not.
new_project sigkill
write_project
: >all_reported.txt
completed=0
for round in 1 2 3 4; do
    delay=0.$((RANDOM % 5 + 1))
    run_and_signal round$round.txt "$delay:KILL"
    check "kill -9 (round $round, after ${delay}s): killed or done (got $RC)" [ "$RC" = 137 -o "$RC" = 0 ]
    reported round$round.txt >>all_reported.txt
    sleep 0.3 # its orphaned commands end (each is 0.2 s)
    if [ "$RC" = 0 ]; then
        completed=1
        break
    fi
done
dups=$(sort all_reported.txt | uniq -d | tr '\n' ' ')
check "kill -9: no task reported done twice across rounds ($dups)" [ -z "$dups" ]
if ((completed)); then
    ran=$(sort -u ran.log | wc -l)
    check "kill -9: the last round finished what was left: every command ran to its end ($ran of $N)" [ "$ran" = "$N" ]
    vt run
    expect_out "$((N / 2)) ran, $((N / 2)) up to date" "kill -9: then a new run runs only the tasks without files"
else
    sort -u all_reported.txt >first_all.txt
    awk '{print "[0/0] " $1 " 0s"}' first_all.txt >first.txt
    check_resume "kill -9" first.txt
fi

finish
