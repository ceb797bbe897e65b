package product

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/petfabric/petfabric/pkg/datera/fake"
	"github.com/petfabric/petfabric/pkg/flex/flextest"
)

// tgtSocket is tgtd's control socket for control port port.
func tgtSocket(port int) string { return fmt.Sprintf("/var/run/tgtd/socket.%d", port) }

// pickTgtPort chooses a tgtd control port whose socket no tgtd (or stale file) holds.
func pickTgtPort() (int, error) {
	for try := range 400 {
		port := 30000 + (os.Getpid()*53+try*131)%2700 // tgtd takes ports up to 32767
		if _, err := os.Stat(tgtSocket(port)); errors.Is(err, os.ErrNotExist) {
			return port, nil
		}
	}
	return 0, errors.New("no free tgtd control port")
}

// loopbackAddr finds a free host:port on a loopback address 127.<a>.x.y of its own, so no
// other listener (another test's tgtd, a backstore proxy) is in the way.
func loopbackAddr(a, port int) (net.Listener, error) {
	var err error
	for try := range 40 {
		addr := fmt.Sprintf("127.%d.%d.%d:%d", a, (os.Getpid()+try*7)%250+1, (os.Getpid()/250+try*13)%250+1, port)
		var l net.Listener
		if l, err = net.Listen("tcp", addr); err == nil {
			return l, nil
		}
	}
	return nil, fmt.Errorf("no free loopback address 127.%d.*.*:%d: %w", a, port, err)
}

// startTgtd starts a private tgtd (foreground, its own control port, portal on portal) that
// dies with this process, and waits until tgtadm reaches it.
func (e *Env) startTgtd(ctx context.Context, port int, portal string) error {
	logPath := filepath.Join(e.Dir, "tgtd.log")
	log, err := os.Create(logPath)
	if err != nil {
		return err
	}
	cmd := exec.Command("tgtd", "-f", "-C", strconv.Itoa(port), "--iscsi", "portal="+portal)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		log.Close()
		return fmt.Errorf("start tgtd: %w", err)
	}
	p := &proc{name: "tgtd", cmd: cmd, logPath: logPath, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); log.Close(); close(p.done) }()
	e.tgtd = p
	e.addProc(p)
	deadline := time.Now().Add(10 * time.Second)
	for {
		select {
		case <-p.done:
			return fmt.Errorf("tgtd exited at start: %s", tailFile(logPath, 10))
		case <-ctx.Done():
			return ctx.Err()
		default:
		}
		if out, err := exec.Command("tgtadm", "-C", strconv.Itoa(port), "--mode", "portal", "--op", "show").Output(); err == nil {
			// tgtd falls back to every address when it cannot bind the portal: accept only ours.
			if want := "Portal: " + portal + ",1"; strings.TrimSpace(string(out)) != want {
				return fmt.Errorf("tgtd portals %q, want only %q", strings.TrimSpace(string(out)), want)
			}
			return nil
		}
		if time.Now().After(deadline) {
			return errors.New("tgtd did not answer tgtadm within 10s")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TgtTargets lists the target names tgtd exports (tgtadm --mode target --op show).
func (e *Env) TgtTargets(ctx context.Context) ([]string, error) {
	out, err := exec.CommandContext(ctx, "tgtadm", "-C", strconv.Itoa(e.TgtControlPort), "--lld", "iscsi",
		"--mode", "target", "--op", "show").CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("tgtadm show targets: %w: %s", err, out)
	}
	var names []string
	for _, line := range splitLines(string(out)) {
		var tid int
		var name string
		if n, _ := fmt.Sscanf(line, "Target %d: %s", &tid, &name); n == 2 {
			names = append(names, name)
		}
	}
	return names, nil
}

// TgtShow is tgtadm's full description of the target iqn (LUNs, ACL, sessions), for the
// narration.
func (e *Env) TgtShow(ctx context.Context, iqn string) (string, error) {
	out, err := exec.CommandContext(ctx, "tgtadm", "-C", strconv.Itoa(e.TgtControlPort), "--lld", "iscsi",
		"--mode", "target", "--op", "show").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("tgtadm show targets: %w: %s", err, out)
	}
	var block []string
	in := false
	for _, line := range splitLines(string(out)) {
		if len(line) > 0 && line[0] != ' ' && line[0] != '\t' {
			in = false
			var tid int
			var name string
			if n, _ := fmt.Sscanf(line, "Target %d: %s", &tid, &name); n == 2 && name == iqn {
				in = true
			}
		}
		if in {
			block = append(block, line)
		}
	}
	return joinLines(block), nil
}

// exporter is the array side of this environment: every volume is a real tgtd target (LUN on
// a sparse file, ACL bound by initiator name: what tgtadm shows and what the agents' probes log
// in to), and the same file is also described to the nodes' loop-device initiator stand-in
// (this kernel has no iscsi_tcp, so a node cannot log in to tgtd itself; the stand-in attaches
// the target's file as a loop device, refusing initiators outside the same ACL). It records
// every ACL it sets, in order.
type exporter struct {
	tgt  *fake.TgtExporter
	loop *flextest.LoopTargets

	mu  sync.Mutex
	log []ACLChange
}

// ACLChange is one ACL the simulator set on a target (nil Initiators: unexported).
type ACLChange struct {
	At         time.Time
	IQN        string
	Initiators []string
}

var _ fake.Exporter = (*exporter)(nil)

func (x *exporter) record(iqn string, initiators []string) {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.log = append(x.log, ACLChange{At: time.Now(), IQN: iqn, Initiators: append([]string(nil), initiators...)})
}

func (x *exporter) Export(ctx context.Context, s fake.TargetSpec) error {
	x.record(s.IQN, s.Initiators)
	if err := x.tgt.Export(ctx, s); err != nil {
		return err
	}
	return x.loop.Export(ctx, s)
}

func (x *exporter) SetACL(ctx context.Context, iqn string, allowAll bool, initiators []string) error {
	x.record(iqn, initiators)
	if err := x.tgt.SetACL(ctx, iqn, allowAll, initiators); err != nil {
		return err
	}
	return x.loop.SetACL(ctx, iqn, allowAll, initiators)
}

func (x *exporter) Unexport(ctx context.Context, iqn string) error {
	x.record(iqn, nil)
	if err := x.tgt.Unexport(ctx, iqn); err != nil {
		return err
	}
	return x.loop.Unexport(ctx, iqn)
}

func (x *exporter) Grow(ctx context.Context, uuid string, size int64) error {
	return x.tgt.Grow(ctx, uuid, size)
}

func (x *exporter) Destroy(ctx context.Context, uuid string) error {
	return errors.Join(x.tgt.Destroy(ctx, uuid), x.loop.Destroy(ctx, uuid))
}

// ACLHistory returns the ACL changes of target iqn since t0, oldest first.
func (e *Env) ACLHistory(iqn string, since time.Time) []ACLChange {
	e.exp.mu.Lock()
	defer e.exp.mu.Unlock()
	var out []ACLChange
	for _, c := range e.exp.log {
		if c.IQN == iqn && !c.At.Before(since) {
			out = append(out, c)
		}
	}
	return out
}
