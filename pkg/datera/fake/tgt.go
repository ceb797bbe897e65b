package fake

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
)

// CommandRunner runs a command and returns its standard output: the seam between TgtExporter and
// tgtadm, so the exporter is testable without tgtd.
type CommandRunner interface {
	Run(ctx context.Context, name string, args ...string) ([]byte, error)
}

// ExecRunner runs commands with os/exec.
type ExecRunner struct{}

// Run runs name with args; a failure's error includes the command's output.
func (ExecRunner) Run(ctx context.Context, name string, args ...string) ([]byte, error) {
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.Bytes(), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err,
			strings.TrimSpace(stderr.String()+" "+stdout.String()))
	}
	return stdout.Bytes(), nil
}

// TgtOptions configures a TgtExporter.
type TgtOptions struct {
	// ControlPort is the tgtd management port (tgtd --control-port, tgtadm -C). 0 is tgtd's default.
	ControlPort int
	// BackingDir holds one sparse file per volume, <volume uuid>.img. Required.
	BackingDir string
	// Tgtadm is the tgtadm binary (default "tgtadm" from PATH).
	Tgtadm string
	// Runner runs tgtadm (default ExecRunner).
	Runner CommandRunner
	// Logger (default: discard).
	Logger *slog.Logger
	// CHAP, when set, is required of every initiator logging in to a target whose spec names no
	// CHAP of its own (TargetSpec.CHAP): the driver's volumes carry no auth settings, so this
	// is how a test puts CHAP on them.
	CHAP *CHAPAccount
}

// TgtExporter exports storage_instances through a running tgtd (Linux SCSI target framework):
// one target per storage_instance named by its IQN, volumes as file-backed LUNs 1..n (tgt keeps
// LUN 0 for its controller), SCSI serial = volume uuid with vendor DATERA / product IBLOCK as on
// Datera, and the ACL bound by initiator name. Safe for concurrent use.
type TgtExporter struct {
	opts TgtOptions
	log  *slog.Logger

	mu       sync.Mutex
	targets  map[string]*tgtTarget // by IQN
	usedTID  map[int]bool
	accounts map[string]string // CHAP accounts created in tgtd: user → password
}

type tgtTarget struct {
	tid        int
	allowAll   bool
	initiators []string
}

// NewTgtExporter checks that tgtd answers on the control port and learns which target ids are
// taken, so it never collides with targets it did not create.
func NewTgtExporter(ctx context.Context, opts TgtOptions) (*TgtExporter, error) {
	if opts.BackingDir == "" {
		return nil, errors.New("tgt exporter: BackingDir is required")
	}
	if err := os.MkdirAll(opts.BackingDir, 0o700); err != nil {
		return nil, fmt.Errorf("tgt exporter: %w", err)
	}
	if opts.Tgtadm == "" {
		opts.Tgtadm = "tgtadm"
	}
	if opts.Runner == nil {
		opts.Runner = ExecRunner{}
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	e := &TgtExporter{opts: opts, log: opts.Logger.With("component", "tgt-exporter"),
		targets: map[string]*tgtTarget{}, usedTID: map[int]bool{}, accounts: map[string]string{}}
	out, err := e.tgtadm(ctx, "--op", "show", "--mode", "target")
	if err != nil {
		return nil, fmt.Errorf("tgt exporter: tgtd not reachable on control port %d: %w", opts.ControlPort, err)
	}
	for tid := range parseTargets(out) {
		e.usedTID[tid] = true
	}
	return e, nil
}

var reTargetLine = regexp.MustCompile(`^Target (\d+): (\S+)$`)

// parseTargets reads "Target <tid>: <iqn>" lines of `tgtadm --op show --mode target`.
func parseTargets(out []byte) map[int]string {
	targets := map[int]string{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		if m := reTargetLine.FindStringSubmatch(strings.TrimSpace(sc.Text())); m != nil {
			tid, _ := strconv.Atoi(m[1])
			targets[tid] = m[2]
		}
	}
	return targets
}

func (e *TgtExporter) tgtadm(ctx context.Context, args ...string) ([]byte, error) {
	full := append([]string{"--lld", "iscsi"}, args...)
	if e.opts.ControlPort != 0 {
		full = append([]string{"-C", strconv.Itoa(e.opts.ControlPort)}, full...)
	}
	return e.opts.Runner.Run(ctx, e.opts.Tgtadm, full...)
}

// BackingFile is where a volume's data lives.
func (e *TgtExporter) BackingFile(volumeUUID string) string {
	return filepath.Join(e.opts.BackingDir, volumeUUID+".img")
}

// Export implements Exporter. Exporting an already exported IQN only updates its ACL.
func (e *TgtExporter) Export(ctx context.Context, t TargetSpec) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if _, ok := e.targets[t.IQN]; ok {
		return e.setACLLocked(ctx, t.IQN, t.AllowAll, t.Initiators)
	}
	for _, l := range t.LUNs {
		if err := e.ensureBacking(l.VolumeUUID, l.SizeGiB); err != nil {
			return err
		}
	}
	tid := 1
	for e.usedTID[tid] {
		tid++
	}
	tidArg := strconv.Itoa(tid)
	if _, err := e.tgtadm(ctx, "--op", "new", "--mode", "target", "--tid", tidArg, "--targetname", t.IQN); err != nil {
		return fmt.Errorf("creating target %s: %w", t.IQN, err)
	}
	e.usedTID[tid] = true
	tgt := &tgtTarget{tid: tid}
	e.targets[t.IQN] = tgt
	undo := func(cause error) error {
		if _, err := e.tgtadm(context.WithoutCancel(ctx), "--op", "delete", "--force", "--mode", "target", "--tid", tidArg); err != nil {
			e.log.Error("cleaning up a half-created target failed", "iqn", t.IQN, "tid", tid, "error", err)
		} else {
			delete(e.usedTID, tid)
		}
		delete(e.targets, t.IQN)
		return cause
	}
	for i, l := range t.LUNs {
		lun := strconv.Itoa(i + 1)
		if _, err := e.tgtadm(ctx, "--op", "new", "--mode", "logicalunit", "--tid", tidArg, "--lun", lun,
			"--backing-store", e.BackingFile(l.VolumeUUID)); err != nil {
			return undo(fmt.Errorf("adding LUN %s to %s: %w", lun, t.IQN, err))
		}
		params := "scsi_sn=" + l.VolumeUUID + ",vendor_id=DATERA,product_id=IBLOCK"
		if _, err := e.tgtadm(ctx, "--op", "update", "--mode", "logicalunit", "--tid", tidArg, "--lun", lun,
			"--params", params); err != nil {
			return undo(fmt.Errorf("setting LUN %s identity on %s: %w", lun, t.IQN, err))
		}
	}
	if err := e.bindCHAPLocked(ctx, tidArg, t); err != nil {
		return undo(err)
	}
	if err := e.setACLLocked(ctx, t.IQN, t.AllowAll, t.Initiators); err != nil {
		return undo(err)
	}
	e.log.Info("iSCSI target exported", "iqn", t.IQN, "tid", tid, "luns", len(t.LUNs), "initiators", t.Initiators)
	return nil
}

// bindCHAPLocked makes the target demand CHAP: the spec's account, else the exporter's. tgtd
// keeps accounts globally, so one is created once and bound to every target that uses it.
func (e *TgtExporter) bindCHAPLocked(ctx context.Context, tid string, t TargetSpec) error {
	acct := t.CHAP
	if acct == nil {
		acct = e.opts.CHAP
	}
	if acct == nil {
		return nil
	}
	if acct.User == "" || acct.Password == "" {
		return fmt.Errorf("CHAP of target %s: user name and password are required", t.IQN)
	}
	if pw, ok := e.accounts[acct.User]; ok && pw != acct.Password {
		return fmt.Errorf("CHAP of target %s: user %s already exists in tgtd with another password", t.IQN, acct.User)
	} else if !ok {
		if _, err := e.tgtadm(ctx, "--op", "new", "--mode", "account", "--user", acct.User, "--password", acct.Password); err != nil {
			return fmt.Errorf("creating CHAP account %s: %w", acct.User, err)
		}
		e.accounts[acct.User] = acct.Password
	}
	if _, err := e.tgtadm(ctx, "--op", "bind", "--mode", "account", "--tid", tid, "--user", acct.User); err != nil {
		return fmt.Errorf("requiring CHAP user %s on %s: %w", acct.User, t.IQN, err)
	}
	return nil
}

// SetACL implements Exporter by binding and unbinding initiator names (and ALL for allow_all).
func (e *TgtExporter) SetACL(ctx context.Context, iqn string, allowAll bool, initiators []string) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.setACLLocked(ctx, iqn, allowAll, initiators)
}

func (e *TgtExporter) setACLLocked(ctx context.Context, iqn string, allowAll bool, initiators []string) error {
	t, ok := e.targets[iqn]
	if !ok {
		return nil
	}
	tid := strconv.Itoa(t.tid)
	for _, in := range initiators {
		if !slices.Contains(t.initiators, in) {
			if _, err := e.tgtadm(ctx, "--op", "bind", "--mode", "target", "--tid", tid, "--initiator-name", in); err != nil {
				return fmt.Errorf("allowing %s on %s: %w", in, iqn, err)
			}
			t.initiators = append(t.initiators, in)
		}
	}
	for _, in := range slices.Clone(t.initiators) {
		if !slices.Contains(initiators, in) {
			if _, err := e.tgtadm(ctx, "--op", "unbind", "--mode", "target", "--tid", tid, "--initiator-name", in); err != nil {
				return fmt.Errorf("revoking %s on %s: %w", in, iqn, err)
			}
			t.initiators = slices.DeleteFunc(t.initiators, func(x string) bool { return x == in })
		}
	}
	if allowAll != t.allowAll {
		op := "unbind"
		if allowAll {
			op = "bind"
		}
		if _, err := e.tgtadm(ctx, "--op", op, "--mode", "target", "--tid", tid, "--initiator-address", "ALL"); err != nil {
			return fmt.Errorf("setting allow_all=%t on %s: %w", allowAll, iqn, err)
		}
		t.allowAll = allowAll
	}
	return nil
}

// Unexport implements Exporter; sessions are forcibly closed.
func (e *TgtExporter) Unexport(ctx context.Context, iqn string) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	t, ok := e.targets[iqn]
	if !ok {
		return nil
	}
	if _, err := e.tgtadm(ctx, "--op", "delete", "--force", "--mode", "target", "--tid", strconv.Itoa(t.tid)); err != nil &&
		!strings.Contains(err.Error(), "can't find the target") {
		return fmt.Errorf("deleting target %s: %w", iqn, err)
	}
	delete(e.targets, iqn)
	delete(e.usedTID, t.tid)
	e.log.Info("iSCSI target removed", "iqn", iqn, "tid", t.tid)
	return nil
}

// Grow implements Exporter. tgt reads a LUN's size when it is added, so an exported target shows
// the new size after its next offline/online.
func (e *TgtExporter) Grow(_ context.Context, volumeUUID string, sizeGiB int64) error {
	return e.ensureBacking(volumeUUID, sizeGiB)
}

// Destroy implements Exporter.
func (e *TgtExporter) Destroy(_ context.Context, volumeUUID string) error {
	if err := os.Remove(e.BackingFile(volumeUUID)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// Close removes every target this exporter created.
func (e *TgtExporter) Close(ctx context.Context) error {
	e.mu.Lock()
	iqns := make([]string, 0, len(e.targets))
	for iqn := range e.targets {
		iqns = append(iqns, iqn)
	}
	e.mu.Unlock()
	var errs []error
	for _, iqn := range iqns {
		errs = append(errs, e.Unexport(ctx, iqn))
	}
	return errors.Join(errs...)
}

// ensureBacking creates the sparse backing file or grows it to size; it never shrinks data.
func (e *TgtExporter) ensureBacking(volumeUUID string, sizeGiB int64) error {
	f, err := os.OpenFile(e.BackingFile(volumeUUID), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("backing store of volume %s: %w", volumeUUID, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("backing store of volume %s: %w", volumeUUID, err)
	}
	if want := sizeGiB << 30; st.Size() < want {
		if err := f.Truncate(want); err != nil {
			return fmt.Errorf("sizing backing store of volume %s to %d GiB: %w", volumeUUID, sizeGiB, err)
		}
	}
	return nil
}
