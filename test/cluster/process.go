package cluster

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// process is one control-plane component running in its own process group, with its output
// in <dir>/<name>.log. The group lets Stop reach any children it forks; Pdeathsig kills the
// component when the test binary dies (panic, timeout) before Stop could run.
type process struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	logFile *os.File

	done      chan struct{} // closed when the process has exited
	waitErr   error
	startedAt time.Time

	stopOnce sync.Once
}

// startProcess runs binary with the test's environment plus env.
func startProcess(name, binary, logPath string, args, env []string) (*process, error) {
	if _, err := os.Stat(binary); err != nil {
		return nil, fmt.Errorf("%s: binary %s: %w (build it with `make tools` / hack/build-tools.sh)", name, binary, err)
	}
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("%s: create log %s: %w", name, logPath, err)
	}
	fmt.Fprintf(logFile, "+ %s %s\n", binary, strings.Join(args, " "))
	cmd := exec.Command(binary, args...)
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.Env = append(append(os.Environ(), "GOTRACEBACK=all"), env...)
	// Run in the directory of the log (the cluster's), never in the test's package directory:
	// kubelet and the drivers it runs clean up after pods, and a relative path must not reach
	// the source tree.
	cmd.Dir = filepath.Dir(logPath)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("%s: start %s: %w", name, binary, err)
	}
	p := &process{name: name, cmd: cmd, logPath: logPath, logFile: logFile, done: make(chan struct{}), startedAt: time.Now()}
	go func() {
		p.waitErr = cmd.Wait()
		logFile.Close()
		close(p.done)
	}()
	return p, nil
}

// exited reports whether the process has ended, and how.
func (p *process) exited() (bool, error) {
	select {
	case <-p.done:
		return true, p.waitErr
	default:
		return false, nil
	}
}

// stop sends SIGTERM to the process group and escalates to SIGKILL after grace.
func (p *process) stop(grace time.Duration) {
	p.stopOnce.Do(func() {
		pgid := p.cmd.Process.Pid
		_ = syscall.Kill(-pgid, syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(grace):
			_ = syscall.Kill(-pgid, syscall.SIGKILL)
			<-p.done
		}
		// Children that outlived the leader still belong to the group.
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
	})
}

// failure describes why the component is not usable, with the tail of its log.
func (p *process) failure(reason string) error {
	state := "still running"
	if ended, err := p.exited(); ended {
		state = "exited"
		if err != nil {
			state = "exited: " + err.Error()
		}
	}
	tail := tailFile(p.logPath, 25)
	err := fmt.Errorf("%s %s (%s); log %s, last lines:\n%s", p.name, reason, state, p.logPath, tail)
	if strings.Contains(tail, "bind: address already in use") {
		return fmt.Errorf("%w: %w", errPortTaken, err)
	}
	return err
}

// errPortTaken marks a start-up failure because a port chosen free was taken before the
// component bound it (see New).
var errPortTaken = errors.New("a port chosen for the control plane was taken by another process")

// tailFile returns the last n lines of a file, indented, or a note why it cannot.
func tailFile(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return "    (cannot read log: " + err.Error() + ")"
	}
	lines := bytes.Split(bytes.TrimRight(data, "\n"), []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	var b strings.Builder
	for _, l := range lines {
		b.WriteString("    ")
		b.Write(l)
		b.WriteByte('\n')
	}
	return b.String()
}

var errNotReady = errors.New("not ready")

// peakRSS is the process's peak resident memory (VmHWM) in bytes, 0 when it has exited.
func (p *process) peakRSS() int64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			var kb int64
			fmt.Sscanf(strings.TrimSpace(rest), "%d kB", &kb)
			return kb * 1024
		}
	}
	return 0
}
