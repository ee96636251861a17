#!/usr/bin/env bash
# Running, up-to-date checks by content, --explain, --force, dry runs.
source "$(dirname "$0")/lib.bash"

new_project diamond
cat >vitte.yaml <<'Y'
tasks:
  a:
    run: echo a >> ran.log; echo A > a.out
    outputs: [a.out]
  b:
    deps: [a]
    run: echo b >> ran.log; cat a.out > b.out; echo B >> b.out
    inputs: [a.out]
    outputs: [b.out]
  c:
    deps: [a]
    run: echo c >> ran.log; cat a.out > c.out
    inputs: [a.out]
    outputs: [c.out]
  build:
    deps: [b, c]
    run: echo build >> ran.log; cat b.out c.out > build.out
    inputs: [b.out, c.out]
    outputs: [build.out]
Y

vt run
expect_rc 0 "first run"
for t in a b c build; do
    check "$t ran once" [ "$(count_lines ran.log $t)" = 1 ]
done
check "build.out is what the graph makes" [ "$(cat build.out)" = "$(printf 'A\nB\nA')" ]
check "build ran last" [ "$(tail -n1 ran.log)" = build ]
check "a ran first" [ "$(head -n1 ran.log)" = a ]
expect_out "4 tasks: 4 ran, 0 up to date" "summary"

vt run
expect_rc 0 "second run"
expect_out "4 tasks: 0 ran, 4 up to date" "nothing runs when nothing changed"
check "nothing ran again" [ "$(wc -l <ran.log)" = 4 ]

# New timestamps, same contents: still up to date (content hashes, not mtimes).
sleep 0.05
touch a.out b.out c.out build.out
vt run
expect_out "0 ran, 4 up to date" "touch alone changes nothing"

# An output edited by hand: its task runs again and, since it makes the same
# content, what depends on it does not.
echo X >a.out
vt run --explain
expect_rc 0
expect_out "explain: a: output .*a.out was changed since it was made" "--explain names the output"
check "a ran again" [ "$(count_lines ran.log a)" = 2 ]
check "b did not (same input as before)" [ "$(count_lines ran.log b)" = 1 ]

# A deleted output.
rm c.out
vt run --explain
expect_out "explain: c: output .*c.out is missing"
check "c ran again" [ "$(count_lines ran.log c)" = 2 ]
check "build did not: c made the same c.out" [ "$(count_lines ran.log build)" = 1 ]

# A changed command.
sed -i 's/cat a.out > c.out/cat a.out > c.out; echo C >> c.out/' vitte.yaml
vt run --explain
expect_out "explain: c: its command, environment, directory or outputs changed"
expect_out "explain: build: input .*c.out changed" "a changed input is named"
check "c ran" [ "$(count_lines ran.log c)" = 3 ]
check "build ran" [ "$(count_lines ran.log build)" = 2 ]

# Dry run: says what would run and runs nothing.
echo Y >a.out
before=$(wc -l <ran.log)
vt run -n --explain
expect_rc 0 "dry run"
expect_out "would run: a \(output .*a.out was changed since it was made\)"
expect_out "would run: b \(its dependency a would run\)"
expect_out "4 tasks would run \(dry run: nothing ran\)"
check "a dry run runs nothing" [ "$(wc -l <ran.log)" = "$before" ]
check "a dry run leaves outputs alone" [ "$(cat a.out)" = Y ]

# --force runs everything.
vt run --force
expect_out "4 tasks: 4 ran"

# Targets: a task and what it depends on, nothing else.
vt run --force b
expect_out "2 tasks: 2 ran"
vt run nosuch
expect_rc 2 "unknown task"
expect_out 'has no task "nosuch"'
vt run buidl
expect_out 'did you mean "build"'

# A task with no inputs or outputs always runs.
new_project always
cat >vitte.yaml <<'Y'
tasks:
  build:
    run: echo x >> ran.log
Y
vt build
vt build
check "a task without files runs every time" [ "$(count_lines ran.log x)" = 2 ]

# Inputs by glob: a new file matching the pattern makes the task run.
new_project globs
mkdir src
echo one >src/a.txt
cat >vitte.yaml <<'Y'
tasks:
  build:
    run: cat src/*.txt > all.out
    inputs: ["src/*.txt"]
    outputs: [all.out]
Y
vt build
expect_out "1 ran"
vt build
expect_out "0 ran, 1 up to date"
echo two >src/b.txt
vt build --explain
expect_out "input .*src/b.txt is new"
rm src/a.txt
vt build --explain
expect_out "input .*src/a.txt is gone"

# A declared input that does not exist fails the task, naming it.
new_project missing_input
cat >vitte.yaml <<'Y'
tasks:
  build:
    run: "true"
    inputs: [nothere.c]
Y
vt build
expect_rc 1
expect_out "input .*nothere.c: no such file"

# A command that does not make its declared output fails.
new_project missing_output
cat >vitte.yaml <<'Y'
tasks:
  build:
    run: "true"
    outputs: [made.o]
Y
vt build
expect_rc 1
expect_out "did not make its output made.o"

finish
