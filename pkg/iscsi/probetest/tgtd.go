// Package probetest runs a private, real iSCSI target daemon (Debian's tgtd) on 127.0.0.1
// for tests of the discovery probe and of the node agent.
//
// Each TGTD listens on its own free loopback port and its own control port (tgtadm talks
// to it over /var/run/tgtd/socket.<N>), so tests and other developers' tgtd instances on
// the same machine never share state. tgtd needs root; without it, or without the tgt
// package, tests fail under PETFABRIC_STRICT=1 and skip otherwise (internal/testenv).
package probetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/petfabric/petfabric/internal/testenv"
)

// TGTD is a running tgtd bound to a single loopback portal.
type TGTD struct {
	// Portal is "127.0.0.1:<port>".
	Portal string
	// ControlPort is the -C value every tgtadm call passes.
	ControlPort int

	t       testing.TB
	dir     string
	cmd     *exec.Cmd
	exited  chan struct{}
	log     *lockedBuffer
	mu      sync.Mutex
	nextTID int
	tids    []int
}

// Start launches tgtd and registers its teardown with t.Cleanup.
func Start(t testing.TB) *TGTD {
	t.Helper()
	testenv.Root(t)
	testenv.LookPath(t, "tgtd")
	testenv.LookPath(t, "tgtadm")
	var lastErr error
	// A free port can be taken between our check and tgtd's bind, and a control port can be
	// held by another tgtd; both are retried with fresh numbers.
	for range 5 {
		d, err := start(t)
		if err == nil {
			t.Cleanup(d.stop)
			return d
		}
		lastErr = err
	}
	t.Fatalf("start tgtd: %v", lastErr)
	return nil
}

func start(t testing.TB) (*TGTD, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	ctl := freeControlPort()
	d := &TGTD{
		Portal:      net.JoinHostPort("127.0.0.1", strconv.Itoa(port)),
		ControlPort: ctl,
		t:           t,
		dir:         t.TempDir(),
		exited:      make(chan struct{}),
		log:         &lockedBuffer{},
		nextTID:     1,
	}
	d.cmd = exec.Command("tgtd", "-f", "-C", strconv.Itoa(ctl), "--iscsi", "portal="+d.Portal)
	d.cmd.Stdout = d.log
	d.cmd.Stderr = d.log
	if err := d.cmd.Start(); err != nil {
		return nil, fmt.Errorf("exec tgtd: %w", err)
	}
	go func() { _ = d.cmd.Wait(); close(d.exited) }()

	deadline := time.Now().Add(10 * time.Second)
	for {
		out, err := d.tgtadmOut("--mode", "portal", "--op", "show")
		if err == nil {
			// tgtd falls back to listening on every address (0.0.0.0:3260) when it cannot
			// bind the requested portal. Accept only exactly our loopback portal.
			want := "Portal: " + d.Portal + ",1"
			if strings.TrimSpace(out) != want {
				d.kill()
				return nil, fmt.Errorf("tgtd portals %q, want only %q; log:\n%s", strings.TrimSpace(out), want, d.log.String())
			}
			return d, nil
		}
		select {
		case <-d.exited:
			return nil, fmt.Errorf("tgtd exited during start-up: %v; log:\n%s", d.cmd.ProcessState, d.log.String())
		default:
		}
		if time.Now().After(deadline) {
			d.kill()
			return nil, fmt.Errorf("tgtd did not answer tgtadm within 10s: %v; log:\n%s", err, d.log.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find free port: %w", err)
	}
	defer func() { _ = l.Close() }()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// freeControlPort picks a control port whose socket file does not exist yet.
func freeControlPort() int {
	for {
		// tgtd accepts control ports up to 32767.
		n := 20000 + rand.IntN(12000)
		if _, err := os.Stat(fmt.Sprintf("/var/run/tgtd/socket.%d", n)); errors.Is(err, os.ErrNotExist) {
			return n
		}
	}
}

// TargetOptions describe a target to create.
type TargetOptions struct {
	// IQN is the target name.
	IQN string
	// Initiators are the initiator names allowed to see and log in to the target. Empty
	// means every initiator (ACL "ALL").
	Initiators []string
	// LUNSize is the size of the file-backed LUN 1; zero means 8 MiB.
	LUNSize int64
}

// AddTarget creates a target with one file-backed LUN and its ACL, returning its tid.
func (d *TGTD) AddTarget(opts TargetOptions) int {
	d.t.Helper()
	d.mu.Lock()
	tid := d.nextTID
	d.nextTID++
	d.tids = append(d.tids, tid)
	d.mu.Unlock()

	size := opts.LUNSize
	if size == 0 {
		size = 8 << 20
	}
	img := filepath.Join(d.dir, fmt.Sprintf("lun-%d.img", tid))
	f, err := os.Create(img)
	if err != nil {
		d.t.Fatalf("create LUN file: %v", err)
	}
	if err := f.Truncate(size); err != nil {
		d.t.Fatalf("size LUN file: %v", err)
	}
	_ = f.Close()
	ts := strconv.Itoa(tid)
	d.Tgtadm("--mode", "target", "--op", "new", "--tid", ts, "--targetname", opts.IQN)
	d.Tgtadm("--mode", "logicalunit", "--op", "new", "--tid", ts, "--lun", "1", "--backing-store", img)
	if len(opts.Initiators) == 0 {
		d.Tgtadm("--mode", "target", "--op", "bind", "--tid", ts, "--initiator-address", "ALL")
	}
	for _, ini := range opts.Initiators {
		d.Tgtadm("--mode", "target", "--op", "bind", "--tid", ts, "--initiator-name", ini)
	}
	return tid
}

// SetDiscoveryCHAP requires CHAP with this account on discovery sessions. With outgoing
// set, the account is the one tgtd answers mutual CHAP challenges with instead.
func (d *TGTD) SetDiscoveryCHAP(user, password string, outgoing bool) {
	d.t.Helper()
	d.Tgtadm("--mode", "account", "--op", "new", "--user", user, "--password", password)
	args := []string{"--mode", "account", "--op", "bind", "--user", user}
	if outgoing {
		args = append(args, "--outgoing")
	}
	// Binding without --tid makes it a global account: tgtd uses those for discovery.
	d.Tgtadm(args...)
}

// SetState switches tgtd between "ready" and "offline"; an offline tgtd rejects logins.
func (d *TGTD) SetState(state string) {
	d.t.Helper()
	d.Tgtadm("--mode", "sys", "--op", "update", "--name", "State", "-v", state)
}

// Tgtadm runs tgtadm against this daemon and fails the test on error.
func (d *TGTD) Tgtadm(args ...string) string {
	d.t.Helper()
	out, err := d.tgtadmOut(args...)
	if err != nil {
		d.t.Fatalf("tgtadm %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

func (d *TGTD) tgtadmOut(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	full := append([]string{"-C", strconv.Itoa(d.ControlPort), "--lld", "iscsi"}, args...)
	out, err := exec.CommandContext(ctx, "tgtadm", full...).CombinedOutput()
	return string(out), err
}

// stop deletes the targets and asks tgtd to exit ("--op delete --mode system" is refused
// while targets exist, and tgtd ignores SIGTERM for a while), then kills it if needed.
func (d *TGTD) stop() {
	select {
	case <-d.exited:
		d.removeSocket()
		return
	default:
	}
	d.mu.Lock()
	tids := append([]int(nil), d.tids...)
	d.mu.Unlock()
	for _, tid := range tids {
		_, _ = d.tgtadmOut("--mode", "target", "--op", "delete", "--force", "--tid", strconv.Itoa(tid))
	}
	_, _ = d.tgtadmOut("--mode", "system", "--op", "delete")
	select {
	case <-d.exited:
	case <-time.After(3 * time.Second):
		d.kill()
	}
	d.removeSocket()
}

func (d *TGTD) kill() {
	_ = d.cmd.Process.Kill()
	select {
	case <-d.exited:
	case <-time.After(5 * time.Second):
	}
	d.removeSocket()
}

func (d *TGTD) removeSocket() {
	base := fmt.Sprintf("/var/run/tgtd/socket.%d", d.ControlPort)
	_ = os.Remove(base)
	_ = os.Remove(base + ".lock")
}

// Log returns what tgtd printed so far (useful in failure messages).
func (d *TGTD) Log() string { return d.log.String() }

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
