// Command demo starts the whole product on this machine (test/product) and replays the 2016
// Datera/PetSet blog walkthrough against it, narrated. `make demo` runs it after `make setup`.
//
//	demo            run the walkthrough, then clean everything up
//	demo --keep     leave it running afterwards (prints the kubeconfig and a kubectl line);
//	                Ctrl-C cleans up
//
// Ctrl-C (SIGINT) or SIGTERM at any time stops the walkthrough and cleans up: processes,
// mounts, loop devices, tgtd and its targets, the route and sysctls the environment set.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/petfabric/petfabric/test/product"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout))
}

// style prints the narration, in colour on a terminal only.
type style struct {
	w     io.Writer
	color bool
	start time.Time
}

func (s style) paint(code, text string) string {
	if !s.color {
		return text
	}
	return "\x1b[" + code + "m" + text + "\x1b[0m"
}

func (s style) progress(format string, args ...any) {
	fmt.Fprintf(s.w, "%s %s\n", s.paint("2", fmt.Sprintf("[%6.1fs]", time.Since(s.start).Seconds())), fmt.Sprintf(format, args...))
}

func isTerminal(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

func run(args []string, stdout *os.File) int {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	keep := fs.Bool("keep", false, "leave the environment running after the walkthrough (Ctrl-C cleans up)")
	until := fs.String("until", "move", "run the walkthrough up to and including this step ("+stepNames()+")")
	binDir := fs.String("bin-dir", defaultBinDir(), "where the webhook, extender and driver are built (kept between runs)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if !validStep(*until) {
		fmt.Fprintf(os.Stderr, "demo: --until %q: want one of %s\n", *until, stepNames())
		return 2
	}
	began := time.Now()
	s := style{w: stdout, color: isTerminal(stdout) && os.Getenv("NO_COLOR") == "", start: began}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	s.progress("%s", s.paint("1", "starting petfabric on this machine: 3 kubelet nodes, the Datera simulator with tgtd, the chart"))
	env, err := product.Start(ctx, product.Options{BinDir: *binDir, Logf: s.progress})
	if env != nil {
		s.progress("state, logs and kubeconfig under %s", env.Dir)
	}
	code := 0
	if err == nil {
		code = walk(ctx, s, env, *until)
		if code == 0 && *keep {
			fmt.Fprintf(stdout, "\n%s\n  export KUBECONFIG=%s\n  %s --kubeconfig %s get pods -A -o wide\n%s\n",
				s.paint("1", "The product keeps running. Use it with:"), env.Kubeconfig, env.Cluster.Bin.Kubectl, env.Kubeconfig,
				"Logs: "+filepath.Join(env.Dir, "logs")+" and "+env.Cluster.Dir+". The node DaemonSet's pods stay in Init:\n"+
					"the fake CRI runs no container; the agents run as host processes from their rendering.\nCtrl-C cleans everything up.")
			<-ctx.Done()
		}
	} else if ctx.Err() == nil {
		fmt.Fprintf(os.Stderr, "demo: %v\n", err)
		code = 1
	}
	if ctx.Err() != nil || code == 130 {
		// Start cleans up after itself when interrupted; Close below does the rest.
		s.progress("interrupted: cleaning up")
		code = 130
	}
	if env != nil && err == nil {
		began := time.Now()
		if cerr := env.Close(); cerr != nil {
			fmt.Fprintf(os.Stderr, "demo: cleaning up: %v\n", cerr)
			code = 1
		} else {
			s.progress("cleaned up in %s: no process, mount, loop device, tgtd target or route left", time.Since(began).Round(100*time.Millisecond))
		}
	}
	return code
}

// killedBySignal reports whether err comes from a command (kubectl, helm) that Ctrl-C or
// SIGTERM ended: a terminal signals the whole foreground process group, so the command can
// die of it before this process's own handler has cancelled its context.
func killedBySignal(err error) bool {
	var exit *exec.ExitError
	if !errors.As(err, &exit) {
		return false
	}
	ws, ok := exit.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && (ws.Signal() == syscall.SIGINT || ws.Signal() == syscall.SIGTERM)
}

func walk(ctx context.Context, s style, env *product.Env, until string) int {
	w := product.NewWalk(env)
	setup := time.Since(s.start)
	for i, step := range product.Steps() {
		fmt.Fprintf(s.w, "\n%s\n%s\n", s.paint("1;36", fmt.Sprintf("── %d. %s", i+1, step.Title)), wrap(step.Say, 96))
		o, err := step.Run(ctx, w)
		if o != nil {
			for _, sh := range o.Shown {
				fmt.Fprintf(s.w, "%s\n%s", s.paint("1;32", "$ "+sh.Command), indent(sh.Output))
			}
		}
		if err != nil {
			if ctx.Err() != nil || killedBySignal(err) {
				return 130
			}
			fmt.Fprintf(os.Stderr, "demo: step %s: %v\n", step.Name, err)
			return 1
		}
		if step.Name == until {
			break
		}
	}
	fmt.Fprintf(s.w, "\n%s\n", s.paint("1", "Timing"))
	for _, t := range env.Timings {
		fmt.Fprintf(s.w, "  %-100s %6.1fs\n", t.Phase, t.Took.Seconds())
	}
	fmt.Fprintf(s.w, "  %-100s %6.1fs\n", "environment ready (from the start of the demo)", setup.Seconds())
	if !w.FirstPV.IsZero() {
		fmt.Fprintf(s.w, "  %-100s %6.1fs\n", "first `kubectl get pv` (from the start of the demo)", w.FirstPV.Sub(s.start).Seconds())
		// make demo passes when it started, so the figure includes make setup and the build.
		if ns, err := strconv.ParseInt(os.Getenv("PETFABRIC_DEMO_T0"), 10, 64); err == nil {
			fmt.Fprintf(s.w, "  %-100s %6.1fs\n", "first `kubectl get pv` (from `make demo`: setup and build included)", w.FirstPV.Sub(time.Unix(0, ns)).Seconds())
		}
	}
	return 0
}

func indent(s string) string {
	if s == "" {
		return ""
	}
	var b strings.Builder
	for _, l := range strings.Split(strings.TrimRight(s, "\n"), "\n") {
		b.WriteString("  " + l + "\n")
	}
	return b.String()
}

func wrap(text string, width int) string {
	var b strings.Builder
	n := 0
	for _, word := range strings.Fields(text) {
		if n > 0 && n+1+len(word) > width {
			b.WriteString("\n")
			n = 0
		} else if n > 0 {
			b.WriteString(" ")
			n++
		}
		b.WriteString(word)
		n += len(word)
	}
	return b.String()
}

func stepNames() string {
	var names []string
	for _, s := range product.Steps() {
		names = append(names, s.Name)
	}
	return strings.Join(names, ", ")
}

func validStep(name string) bool {
	for _, s := range product.Steps() {
		if s.Name == name {
			return true
		}
	}
	return false
}

func defaultBinDir() string {
	if d := os.Getenv("PETFABRIC_CACHE"); d != "" {
		return filepath.Join(d, "demo", "bin")
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return filepath.Join(os.TempDir(), "petfabric-demo-bin")
	}
	return filepath.Join(home, ".cache", "petfabric", "demo", "bin")
}
