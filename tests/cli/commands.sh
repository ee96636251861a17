#!/usr/bin/env bash
# vitte list, graph, trace, history, help, and the task file found from a
# subdirectory.
source "$(dirname "$0")/lib.bash"

new_project commands
mkdir -p src sub/dir
echo 'int a;' >src/a.c
echo 'int b;' >src/b.c
cat >vitte.yaml <<'Y'
vars:
  out: build
tasks:
  compile:
    desc: Compile each file
    glob: src/*.c
    run: mkdir -p ${out} && cp ${item} ${out}/${item.stem}.o
    inputs: ["${item}"]
    outputs: ["${out}/${item.stem}.o"]
  link:
    desc: Link them
    deps: [compile]
    run: cat ${out}/a.o ${out}/b.o > ${out}/app
    inputs: ["${out}/*.o"]
    outputs: ["${out}/app"]
  build:
    deps: [link]
Y

vt list
expect_rc 0 "list"
expect_out "^compile:\* +Compile each file \(2 tasks\)$" "an expanded entry is one line"
expect_out "^link +Link them$"

vt graph
expect_rc 0 "graph"
expect_out "^digraph" "DOT"
expect_out '"compile:a" -> "link"' "an edge"
printf '%s\n' "$OUT" >graph.dot
if command -v python3 >/dev/null; then
    check "graph: every task is a node" python3 - graph.dot <<'PY'
import re, sys
text = open(sys.argv[1]).read()
names = {"compile:a", "compile:b", "link", "build"}
found = set(re.findall(r'"([^"]+)"', text))
sys.exit(0 if names <= found else 1)
PY
fi
vt graph link
expect_no_out '"build"' "graph TASK: only what TASK needs"

vt history
expect_out "no runs yet"
vt trace
expect_rc 1 "no trace before a run"
expect_out "no trace yet"

vt build
expect_rc 0 "build"
check "built" [ "$(cat build/app)" = "$(printf 'int a;\nint b;')" ]

vt trace -o trace.json
expect_rc 0 "trace"
check "the trace is JSON with events" python3 -c "
import json, sys
t = json.load(open('trace.json'))
ev = t['traceEvents'] if isinstance(t, dict) else t
sys.exit(0 if any(e.get('name') == 'link' for e in ev) else 1)"

vt history
expect_rc 0 "history"
expect_out "succeeded .* 4 tasks, 0 failed +build" "a run in the history"
vt history --json
check "history --json parses" python3 -c "import json,sys; r=json.loads(sys.argv[1]); sys.exit(0 if r and r[0]['status']=='succeeded' else 1)" "$OUT"

# Found from a subdirectory: the file's directory is the project.
cd sub/dir
vt build
expect_rc 0 "from a subdirectory"
expect_out "0 ran, 3 up to date"
cd "$PROJECT"

# -f elsewhere.
mkdir -p other
cp vitte.yaml other/tasks.yaml
cp -R src other/
vt -f other/tasks.yaml build
expect_rc 0 "-f FILE"
check "-f: outputs beside that file" [ -e other/build/app ]

# Help matches the commands.
vt --help
expect_rc 0
general=$OUT
for c in run build test bench list graph trace history help; do
    OUT=$general
    expect_out "^  $c |^  $c$|^  build, test, bench" "--help lists $c"
    vt "$c" --help
    expect_rc 0 "$c --help"
    expect_out "usage: vitte $c" "$c --help: its usage"
done
vt help graph
expect_out "usage: vitte graph"
vt --version
expect_out "^vitte [0-9]+\.[0-9]+\.[0-9]+$"

finish
