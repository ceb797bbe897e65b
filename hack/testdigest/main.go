// Command testdigest prints, after a `go test -v` run, the failures of its log in a few lines
// each: the failing tests, each testify assertion's location, Error and Messages, and the last
// log lines a test printed before it failed (t.Fatal, require with a plain message). CI keeps
// only the end of a run's output, and a failure's cause is otherwise buried thousands of lines
// above it under the processes' logs that the suites print on failure.
//
//	go run ./hack/testdigest [-max-lines N] .cache/test-logs/go-test.log
package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"os"
	"regexp"
	"strings"
)

func main() {
	maxLines := flag.Int("max-lines", 200, "print at most this many lines")
	flag.Parse()
	if flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: testdigest [-max-lines N] <go test -v log>")
		os.Exit(2)
	}
	f, err := os.Open(flag.Arg(0))
	if err != nil {
		fmt.Fprintf(os.Stderr, "testdigest: %v\n", err)
		os.Exit(2)
	}
	defer f.Close()
	lines, err := digest(f)
	if err != nil {
		fmt.Fprintf(os.Stderr, "testdigest: %v\n", err)
		os.Exit(2)
	}
	if len(lines) > *maxLines {
		lines = append(lines[:*maxLines], fmt.Sprintf("… %d more lines in %s", len(lines)-*maxLines, flag.Arg(0)))
	}
	for _, l := range lines {
		fmt.Println(l)
	}
}

var (
	// logEntry is a line a test logged: four spaces, the file and line, the message.
	logEntry = regexp.MustCompile(`^\s+([\w.-]+\.go:\d+): ?(.*)$`)
	failLine = regexp.MustCompile(`^\s*--- FAIL: `)
	pkgFail  = regexp.MustCompile(`^FAIL\s+\S+`)
	// testify's block: "        \tError Trace:\t…", "\tError:      \t…", "\tMessages:   \t…".
	testifyField = regexp.MustCompile(`^\s+(Error Trace|Error|Test|Messages):\s*(.*)$`)
)

// entry is one logged message with its continuation lines.
type entry struct {
	where string
	text  []string
}

func (e *entry) testify() bool {
	for _, l := range e.text {
		if strings.Contains(l, "Error Trace:") {
			return true
		}
	}
	return false
}

// lines renders the entry: for a testify block its Error and Messages fields (continuation
// lines of Error included, up to 8), otherwise its first lines.
func (e *entry) lines() []string {
	out := []string{"  " + e.where + ":"}
	if !e.testify() {
		for i, l := range e.text {
			if i == 6 {
				out = append(out, "      …")
				break
			}
			out = append(out, "      "+clip(strings.TrimSpace(l)))
		}
		return out
	}
	field, cont := "", 0
	for _, l := range e.text {
		if m := testifyField.FindStringSubmatch(l); m != nil {
			field, cont = m[1], 0
			if field == "Error" || field == "Messages" {
				out = append(out, "      "+field+": "+clip(m[2]))
			}
			continue
		}
		if field == "Error" && cont < 8 {
			cont++
			out = append(out, "        "+clip(strings.TrimSpace(l)))
		}
	}
	return out
}

func clip(s string) string {
	const max = 400
	if len(s) > max {
		return s[:max] + " …"
	}
	return s
}

// digest reads a go test -v log and returns the failure summary (nil when nothing failed).
func digest(r io.Reader) ([]string, error) {
	var out []string
	var recent []*entry // the current test's entries since the last === RUN/--- line
	var cur *entry
	flush := func() {
		if cur != nil {
			recent = append(recent, cur)
			if len(recent) > 40 {
				recent = recent[1:]
			}
			cur = nil
		}
	}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case failLine.MatchString(line):
			flush()
			out = append(out, strings.TrimSpace(line))
			// A testify failure says everything; otherwise the last lines the test logged
			// (a t.Fatal, or require's plain message) are its cause.
			var shown int
			for _, e := range recent {
				if e.testify() {
					out = append(out, e.lines()...)
					shown++
				}
			}
			if shown == 0 {
				// The last three short entries: long ones are the process logs a suite
				// dumps when it fails, not the failure.
				var plain []*entry
				for _, e := range recent {
					if len(e.text) <= 10 {
						plain = append(plain, e)
					}
				}
				for _, e := range plain[max(0, len(plain)-3):] {
					out = append(out, e.lines()...)
				}
			}
			recent = nil
		case pkgFail.MatchString(line):
			flush()
			out = append(out, line)
			recent = nil
		case strings.HasPrefix(strings.TrimSpace(line), "=== "), strings.HasPrefix(strings.TrimSpace(line), "--- "):
			flush()
		default:
			if m := logEntry.FindStringSubmatch(line); m != nil {
				flush()
				cur = &entry{where: m[1], text: []string{m[2]}}
				continue
			}
			if cur != nil && strings.TrimSpace(line) != "" && (strings.HasPrefix(line, "    ") || strings.HasPrefix(line, "\t")) {
				if len(cur.text) < 200 {
					cur.text = append(cur.text, line)
				}
				continue
			}
			flush()
		}
	}
	return out, sc.Err()
}
