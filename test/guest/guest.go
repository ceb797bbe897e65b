package guest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/petfabric/petfabric/internal/testenv"
	"github.com/petfabric/petfabric/pkg/datera"
	"github.com/petfabric/petfabric/pkg/datera/fake"
	"github.com/petfabric/petfabric/pkg/flex/flextest"
)

// Addresses inside every guest's private namespace (each namespace has its own, so they repeat).
const (
	HostIP    = "192.168.77.1" // the bridge: the Datera simulator's API
	GuestIP   = "192.168.77.2"
	PortalIP  = "192.168.77.3" // tgtd's portal, an address of its own so it can die alone
	Portal    = PortalIP + ":3260"
	PortalIP2 = "192.168.77.4" // the second portal of Options.TwoPortals
	Portal2   = PortalIP2 + ":3260"
	SimPort   = 7717
	bridge    = "pfbr0"
	tap       = "pftap0"
	nsPrefix  = "pfguest-"
	User      = "guestuser"
	Password  = "Pw_guestSecret.4711"
	Initiator = "iqn.2026-11.io.petfabric:guest-node-a"
)

// Options configure an Env.
type Options struct {
	// CHAP, when set, is demanded by every target (fake.TgtOptions.CHAP).
	CHAP *fake.CHAPAccount
	// Config entries added to (or replacing) the guest's flex node config.
	Config map[string]any
	// TwoPortals serves every target on a second portal too (PortalIP2, an address of its own),
	// and the simulator reports both in the volumes' access IPs.
	TwoPortals bool
}

// Env is one guest's world: a network namespace with a bridge, tgtd on the portal, and the
// Datera simulator in real iSCSI mode serving its API on the bridge address. Boot runs a
// guest in it. Everything is removed when the test ends, whatever happened.
type Env struct {
	T       testing.TB
	NS      string
	Dir     string
	Sim     *fake.Server
	SimURL  string
	Client  *datera.Client
	Targets *fake.TgtExporter
	Config  map[string]any
	Image   *Image
	// OnLine, when set, sees every guest line as it arrives (from the serial reader: a host
	// action it takes, such as KillPortal, happens before the guest's next line is read).
	OnLine func(Line)

	ctlPort int
	portals []string
	tgtd    *exec.Cmd
	tgtDone chan struct{}

	mu      sync.Mutex
	events  []Line // host-side events (ACL changes, exports), interleaved with guest lines
	start   time.Time
	qemuPID int
}

// Line is one machine-readable line: from the guest (PFG-STEP, PFG-FLEX, PFG-CHECK,
// PFG-RESULT) or from the host's recorder (HOST-…), with when the harness saw it.
type Line struct {
	Kind  string // e.g. "PFG-FLEX", "HOST-ACL"
	Label string
	Text  string
	At    time.Duration // since the Env started
}

// Require skips (or, under PETFABRIC_STRICT=1, fails) unless this machine can run guests.
func Require(t testing.TB) {
	t.Helper()
	testenv.Root(t)
	for _, c := range []string{"qemu-system-x86_64", "tgtd", "tgtadm", "ip", "xz", "ldd"} {
		testenv.LookPath(t, c)
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		testenv.Missing(t, "/dev/net/tun (tap devices for the qemu guest)")
	}
	if _, err := os.Stat(filepath.Join(CacheDir(), "current")); err != nil {
		testenv.Missing(t, "the guest kernel and busybox (hack/setup-guest.sh)")
	}
}

var portSeq struct {
	sync.Mutex
	n int
}

// pickControlPort chooses a tgtd control port whose socket no tgtd (or stale file) holds.
func (e *Env) pickControlPort() error {
	portSeq.Lock()
	defer portSeq.Unlock()
	for try := 0; try < 200; try++ {
		portSeq.n++
		port := 30000 + (os.Getpid()*37+portSeq.n*131)%2700
		if _, err := os.Stat(tgtSocket(port)); errors.Is(err, os.ErrNotExist) {
			e.ctlPort = port
			return nil
		}
	}
	return errors.New("no free tgtd control port")
}

// New builds the namespace, tgtd and the simulator. It needs root, qemu, tgtd and /dev/net/tun.
func New(t testing.TB, opts Options) *Env {
	t.Helper()
	Require(t)
	img, err := BuildImage()
	if err != nil {
		t.Fatalf("guest image: %v", err)
	}
	SweepStale()
	e := &Env{T: t, Image: img, Dir: t.TempDir(), start: time.Now(), portals: []string{PortalIP}}
	if opts.TwoPortals {
		e.portals = append(e.portals, PortalIP2)
	}
	if err := e.pickControlPort(); err != nil {
		t.Fatal(err)
	}
	// The name carries what SweepStale needs when this process dies before its cleanup.
	e.NS = fmt.Sprintf("%s%d-%d", nsPrefix, os.Getpid(), e.ctlPort)
	t.Cleanup(e.cleanup)
	if err := e.network(); err != nil {
		t.Fatalf("guest network: %v", err)
	}
	if err := e.startTgtd(); err != nil {
		t.Fatalf("tgtd: %v", err)
	}
	ctx := context.Background()
	e.Targets, err = fake.NewTgtExporter(ctx, fake.TgtOptions{ControlPort: e.ctlPort,
		BackingDir: filepath.Join(e.Dir, "backing"), CHAP: opts.CHAP})
	if err != nil {
		t.Fatal(err)
	}
	e.Sim, err = fake.New(fake.Options{Users: map[string]string{User: Password}, Portals: e.portals,
		Exporter: &recorder{Exporter: e.Targets, env: e},
		Logger:   slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := listenIn(e.NS, fmt.Sprintf("%s:%d", HostIP, SimPort))
	if err != nil {
		t.Fatalf("simulator listener in %s: %v", e.NS, err)
	}
	srv := &http.Server{Handler: e.Sim, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	e.SimURL = fmt.Sprintf("http://%s:%d", HostIP, SimPort)
	// The host's own client reaches the simulator through the handler, not the namespace.
	e.Client, err = datera.New(datera.Config{Endpoint: e.SimURL, Username: User, Password: Password,
		HTTPClient: &http.Client{Transport: handlerTransport{e.Sim}}})
	if err != nil {
		t.Fatal(err)
	}
	e.Config = map[string]any{
		"nodeName": "guest-node-a", "logFile": "/var/log/petfabric/flex.log", "logLevel": "debug",
		"multipath": "off", "deviceWaitTimeout": "15s", "availableTimeout": "20s", "unmountTimeout": "60s",
		"allowedBackstores": []string{fmt.Sprintf("%s:%d", HostIP, SimPort)}, "allowInsecureHTTP": true,
	}
	for k, v := range opts.Config {
		e.Config[k] = v
	}
	return e
}

// handlerTransport serves requests with a handler in-process.
type handlerTransport struct{ h http.Handler }

func (h handlerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	rec := httptest.NewRecorder()
	h.h.ServeHTTP(rec, r)
	return rec.Result(), nil
}

func (e *Env) ip(args ...string) error {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, out)
	}
	return nil
}

// network makes the namespace: lo, a bridge with the host address and the guest's tap.
func (e *Env) network() error {
	steps := [][]string{
		{"netns", "add", e.NS},
		{"-n", e.NS, "link", "set", "lo", "up"},
		{"-n", e.NS, "link", "add", bridge, "type", "bridge"},
		{"-n", e.NS, "addr", "add", HostIP + "/24", "dev", bridge},
		{"-n", e.NS, "link", "set", bridge, "up"},
		{"-n", e.NS, "tuntap", "add", "dev", tap, "mode", "tap"},
		{"-n", e.NS, "link", "set", tap, "master", bridge},
		{"-n", e.NS, "link", "set", tap, "up"},
	}
	for _, p := range e.portals {
		steps = append(steps, []string{"-n", e.NS, "addr", "add", p + "/24", "dev", bridge})
	}
	for _, s := range steps {
		if err := e.ip(s...); err != nil {
			return err
		}
	}
	return nil
}

// listenIn opens a TCP listener inside the named network namespace: the socket stays there
// after this thread switches back.
func listenIn(ns, addr string) (net.Listener, error) {
	target, err := os.Open(filepath.Join("/run/netns", ns))
	if err != nil {
		return nil, err
	}
	defer target.Close()
	runtime.LockOSThread()
	orig, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		runtime.UnlockOSThread()
		return nil, err
	}
	defer orig.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return nil, fmt.Errorf("setns %s: %w", ns, err)
	}
	ln, lerr := net.Listen("tcp", addr)
	if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
		// This thread stays in the wrong namespace: keep it locked so the runtime retires it.
		return ln, fmt.Errorf("returning to the host namespace: %w", err)
	}
	runtime.UnlockOSThread()
	return ln, lerr
}

func tgtSocket(port int) string { return fmt.Sprintf("/var/run/tgtd/socket.%d", port) }

// startTgtd starts a private tgtd in the namespace, portal on the bridge address, on a control
// port no other tgtd uses. It dies with the test process (Pdeathsig).
func (e *Env) startTgtd() error {
	port := e.ctlPort
	log, err := os.Create(filepath.Join(e.Dir, "tgtd.log"))
	if err != nil {
		return err
	}
	cmd := exec.Command("ip", "netns", "exec", e.NS, "tgtd", "-f", "-C", strconv.Itoa(port), "--iscsi", "portal="+Portal)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		log.Close()
		return err
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); log.Close(); close(done) }()
	e.tgtd, e.tgtDone = cmd, done
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		select {
		case <-done:
			return fmt.Errorf("tgtd exited at start: %s", readTail(filepath.Join(e.Dir, "tgtd.log")))
		default:
		}
		if exec.Command("tgtadm", "-C", strconv.Itoa(port), "--mode", "sys", "--op", "show").Run() == nil {
			// More portals are added to the running tgtd (it listens in the namespace).
			for _, p := range e.portals[1:] {
				out, err := exec.Command("tgtadm", "-C", strconv.Itoa(port), "--lld", "iscsi", "--mode", "portal",
					"--op", "new", "--param", "portal="+p+":3260").CombinedOutput()
				if err != nil {
					return fmt.Errorf("adding the portal %s: %w: %s", p, err, out)
				}
			}
			return nil
		}
	}
	return errors.New("tgtd did not answer within 10s")
}

// TgtdPID is tgtd's process id.
func (e *Env) TgtdPID() int { return e.tgtd.Process.Pid }

// QemuPID is the running (or last) guest's qemu process id, 0 before the first boot.
func (e *Env) QemuPID() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.qemuPID
}

// KillPortal makes the portal die under its sessions: its address leaves the network, as when
// a storage node fails, while the simulator's API (on another address) keeps answering. tgtd
// cannot remove a target whose logical unit a session holds, even with --force, so removing
// the target is not a way to do this.
func (e *Env) KillPortal() error { return e.KillPortalIP(PortalIP) }

// KillPortalIP is KillPortal for the portal on ip (PortalIP or PortalIP2).
func (e *Env) KillPortalIP(ip string) error {
	return e.ip("-n", e.NS, "addr", "del", ip+"/24", "dev", bridge)
}

// Backing is the backing file of volume id on the simulator.
func (e *Env) Backing(id string) string { return flextest.BackingFileOf(e.T, e.Client, e.Targets, id) }

// MountOptions returns the JSON kubelet would pass to mount for volume id with the simulator
// user's secret (ext4 unless extra says otherwise); an empty extra value deletes a key.
func (e *Env) MountOptions(id string, extra map[string]string) string {
	return flextest.KubeletMountOptions(e.SimURL, id, "ext4", User, Password, extra)
}

func (e *Env) note(kind, label, text string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.events = append(e.events, Line{Kind: kind, Label: label, Text: text, At: time.Since(e.start)})
}

// Lines returns everything seen so far, in order.
func (e *Env) Lines() []Line {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]Line(nil), e.events...)
}

// recorder notes the simulator's target changes in the Env's line log.
type recorder struct {
	fake.Exporter
	env *Env
}

func (r *recorder) Export(ctx context.Context, t fake.TargetSpec) error {
	err := r.Exporter.Export(ctx, t)
	r.env.note("HOST-EXPORT", t.IQN, fmt.Sprintf("initiators=%v err=%v", t.Initiators, err))
	return err
}

func (r *recorder) SetACL(ctx context.Context, iqn string, allowAll bool, initiators []string) error {
	err := r.Exporter.SetACL(ctx, iqn, allowAll, initiators)
	r.env.note("HOST-ACL", iqn, fmt.Sprintf("initiators=%v err=%v", initiators, err))
	return err
}

func (r *recorder) Unexport(ctx context.Context, iqn string) error {
	err := r.Exporter.Unexport(ctx, iqn)
	r.env.note("HOST-UNEXPORT", iqn, fmt.Sprintf("err=%v", err))
	return err
}

// cleanup removes, in order: targets, tgtd, the namespace (bridge and tap go with it), tgtd's
// control socket. qemu is stopped by Boot's own cleanup, registered later and so run earlier.
func (e *Env) cleanup() {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if e.Targets != nil {
		_ = e.Targets.Close(ctx)
	}
	if e.tgtd != nil {
		_ = exec.CommandContext(ctx, "tgtadm", "-C", strconv.Itoa(e.ctlPort), "--mode", "system", "--op", "delete").Run()
		select {
		case <-e.tgtDone:
		case <-time.After(5 * time.Second):
			_ = syscall.Kill(-e.tgtd.Process.Pid, syscall.SIGKILL)
			<-e.tgtDone
		}
		_ = os.Remove(tgtSocket(e.ctlPort))
		_ = os.Remove(tgtSocket(e.ctlPort) + ".lock")
	}
	if err := e.ip("netns", "del", e.NS); err != nil && !strings.Contains(err.Error(), "No such file") {
		e.T.Errorf("cleanup: %v", err)
	}
}

// SweepStale removes namespaces and tgtd control sockets left by test processes that were
// killed before their cleanup ran (the namespace's name carries the dead process's pid and its
// tgtd's control port). Their qemu and tgtd died with them (Pdeathsig).
func SweepStale() {
	names, _ := filepath.Glob(filepath.Join("/run/netns", nsPrefix+"*"))
	for _, n := range names {
		var pid, port int
		if _, err := fmt.Sscanf(strings.TrimPrefix(filepath.Base(n), nsPrefix), "%d-%d", &pid, &port); err != nil || pid == os.Getpid() {
			continue
		}
		if err := syscall.Kill(pid, 0); err == nil || errors.Is(err, syscall.EPERM) {
			continue // a live process owns it
		}
		_ = exec.Command("ip", "netns", "del", filepath.Base(n)).Run()
		_ = os.Remove(tgtSocket(port))
		_ = os.Remove(tgtSocket(port) + ".lock")
	}
}

func readTail(path string) string {
	b, _ := os.ReadFile(path)
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(bytes.TrimSpace(b))
}

// Run is the outcome of one boot.
type Run struct {
	Lines    []Line // guest lines and host events, in order
	Passed   bool
	Console  string // path of the full serial console log
	Boot     time.Duration
	Duration time.Duration
}

// Boot runs a guest whose /guest-test is script (sh, with the helpers of guest.sh loaded), with
// the flex binary at /usr/local/bin/flex, the node config and this initiator name, and waits
// for its result line, at most timeout. qemu is killed when the wait ends, whatever happened.
func (e *Env) Boot(flexBinary, initiator, script string, timeout time.Duration) *Run {
	e.T.Helper()
	extra := filepath.Join(e.Dir, fmt.Sprintf("extra-%d", time.Now().UnixNano()))
	cfg, _ := json.Marshal(e.Config)
	files := map[string]string{
		"guest-test":                    "#!/bin/sh\n. /etc/petfabric/guest.sh\n" + script,
		"etc/petfabric/flex.json":       string(cfg),
		"etc/iscsi/initiatorname.iscsi": "InitiatorName=" + initiator + "\n",
	}
	for name, text := range files {
		p := filepath.Join(extra, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			e.T.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(text), 0o755); err != nil {
			e.T.Fatal(err)
		}
	}
	if err := copyFile(flexBinary, filepath.Join(extra, "usr/local/bin/flex"), 0o755); err != nil {
		e.T.Fatal(err)
	}
	extraImg := extra + ".cpio.gz"
	if err := packCPIO(e.Image.Busybox, extra, extraImg); err != nil {
		e.T.Fatal(err)
	}
	initrd := extra + ".initrd"
	if err := concat(initrd, e.Image.Initramfs, extraImg); err != nil {
		e.T.Fatal(err)
	}
	console := extra + ".console.log"
	cmd := exec.Command("ip", "netns", "exec", e.NS, "qemu-system-x86_64",
		"-accel", "tcg", "-cpu", "max", "-smp", "1", "-m", "512",
		"-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
		"-serial", "file:"+console, "-serial", "stdio",
		"-kernel", e.Image.Kernel, "-initrd", initrd,
		"-append", fmt.Sprintf("console=ttyS0 panic=-1 net.ifnames=0 loglevel=4 pfg.ip=%s pfg.host=%s", GuestIP, HostIP),
		"-netdev", "tap,id=n0,ifname="+tap+",script=no,downscript=no",
		"-device", "virtio-net-pci,netdev=n0,mac=52:54:00:77:00:02")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		e.T.Fatal(err)
	}
	qlog, err := os.Create(extra + ".qemu.log")
	if err != nil {
		e.T.Fatal(err)
	}
	defer qlog.Close()
	cmd.Stderr = qlog
	start := time.Now()
	if err := cmd.Start(); err != nil {
		e.T.Fatalf("starting qemu: %v", err)
	}
	e.mu.Lock()
	e.qemuPID = cmd.Process.Pid
	e.mu.Unlock()
	kill := func() { _ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	e.T.Cleanup(kill) // also when the test fails before the wait below ends
	result := make(chan bool, 1)
	readDone := make(chan struct{})
	var boot time.Duration
	go func() {
		defer close(readDone)
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
		for sc.Scan() {
			line := strings.TrimRight(sc.Text(), "\r")
			kind, rest, _ := strings.Cut(line, " ")
			if !strings.HasPrefix(kind, "PFG-") {
				continue
			}
			label, text, _ := strings.Cut(rest, " ")
			e.note(kind, label, text)
			if e.OnLine != nil {
				e.OnLine(Line{Kind: kind, Label: label, Text: text})
			}
			if kind == "PFG-STEP" && label == "ready" {
				boot = time.Since(start)
			}
			if kind == "PFG-RESULT" {
				result <- label == "PASS"
			}
		}
	}()
	run := &Run{Console: console}
	select {
	case run.Passed = <-result:
	case <-readDone:
		e.T.Errorf("qemu exited without a result line; console tail:\n%s\nqemu: %s", readTail(console), readTail(extra+".qemu.log"))
	case <-time.After(timeout):
		e.T.Errorf("no result from the guest within %s; console tail:\n%s", timeout, readTail(console))
	}
	kill()
	<-readDone
	_ = cmd.Wait()
	run.Duration, run.Boot = time.Since(start), boot
	run.Lines = e.Lines()
	if !run.Passed || e.T.Failed() {
		e.T.Logf("guest console: %s\n%s", console, readTail(console))
		for _, l := range run.Lines {
			e.T.Logf("%8s %s %s %s", l.At.Round(time.Millisecond), l.Kind, l.Label, l.Text)
		}
	}
	return run
}

func concat(out string, parts ...string) error {
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	for _, p := range parts {
		in, err := os.Open(p)
		if err != nil {
			f.Close()
			return err
		}
		_, err = io.Copy(f, in)
		in.Close()
		if err != nil {
			f.Close()
			return err
		}
	}
	return f.Close()
}

var flexBuild struct {
	sync.Mutex
	bins map[string]string
	dir  string
}

// FlexBinary builds cmd/flex once per process and build tags (CGO_ENABLED=0: the guest has
// no Go toolchain's libc expectations beyond the kernel).
func FlexBinary(t testing.TB, tags string) string {
	t.Helper()
	flexBuild.Lock()
	defer flexBuild.Unlock()
	if p, ok := flexBuild.bins[tags]; ok {
		return p
	}
	if flexBuild.bins == nil {
		dir, err := os.MkdirTemp("", "pfguest-flex-")
		if err != nil {
			t.Fatal(err)
		}
		flexBuild.bins, flexBuild.dir = map[string]string{}, dir
	}
	out := filepath.Join(flexBuild.dir, "flex"+strings.ReplaceAll(tags, ",", "_"))
	args := []string{"build", "-trimpath", "-o", out}
	if tags != "" {
		args = append(args, "-tags", tags)
	}
	cmd := exec.Command("go", append(args, "github.com/petfabric/petfabric/cmd/flex")...)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building the flex driver: %v\n%s", err, b)
	}
	flexBuild.bins[tags] = out
	return out
}
