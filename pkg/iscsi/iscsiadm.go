package iscsi

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	utilexec "k8s.io/utils/exec"
)

// Iscsiadm is the open-iscsi initiator: it drives iscsiadm through an exec seam (k8s.io/utils/exec)
// and manages the LUN's block devices through sysfs (Devices). It is safe for concurrent use
// as far as iscsiadm itself is (open-iscsi locks its node database); callers serialize logins
// and logouts of one target with their own lock.
type Iscsiadm struct {
	// Exec runs commands (utilexec.New() in production).
	Exec utilexec.Interface
	// Command is the iscsiadm binary (default "iscsiadm").
	Command string
	// Devices locates by-path links and sysfs.
	Devices Devices
	// Multipath makes Logout flush the dm-multipath map above the LUN's paths first.
	Multipath bool
	// MultipathCommand is the multipath binary (default "multipath").
	MultipathCommand string
	// CommandTimeout bounds one command (default 2 minutes: a login retries for ~2 minutes with
	// open-iscsi's defaults). kubelet puts no timeout on mount, so a hung iscsiadm must not hang
	// the driver for ever.
	CommandTimeout time.Duration
	// Log receives one line per command (secrets redacted). Nil discards.
	Log *slog.Logger
}

var _ Initiator = (*Iscsiadm)(nil)

// Session is one line of `iscsiadm -m session`.
type Session struct {
	Transport string // "tcp"
	SID       int
	Portal    string // ip:port as Validate/ParsePortal canonicalize it
	TPGT      int
	IQN       string
}

func (a *Iscsiadm) log() *slog.Logger {
	if a.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return a.Log
}

// run executes iscsiadm; a non-zero exit is an *AdmError carrying the exit code.
func (a *Iscsiadm) run(ctx context.Context, args ...string) (string, error) {
	cmd := a.Command
	if cmd == "" {
		cmd = "iscsiadm"
	}
	return a.exec(ctx, cmd, args...)
}

func (a *Iscsiadm) exec(ctx context.Context, cmd string, args ...string) (string, error) {
	timeout := a.CommandTimeout
	if timeout <= 0 {
		timeout = 2 * time.Minute
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	start := time.Now()
	out, err := a.Exec.CommandContext(ctx, cmd, args...).CombinedOutput()
	shown := redactArgs(args)
	if err == nil {
		a.log().DebugContext(ctx, "command ok", "cmd", cmd, "args", shown, "duration", time.Since(start))
		return string(out), nil
	}
	ae := &AdmError{Command: cmd, Args: shown, Code: -1, Output: strings.TrimSpace(string(out)), Err: err}
	var ee utilexec.ExitError
	if errors.As(err, &ee) && ee.Exited() {
		ae.Code = ExitCode(ee.ExitStatus())
	}
	if ctx.Err() != nil {
		ae.Err = fmt.Errorf("%w (timeout %s)", ctx.Err(), timeout)
	}
	a.log().DebugContext(ctx, "command failed", "cmd", cmd, "args", shown, "exit", int(ae.Code), "output", ae.Output, "duration", time.Since(start))
	return string(out), ae
}

// node runs `iscsiadm -m node -T iqn -p portal <args>`.
func (a *Iscsiadm) node(ctx context.Context, iqn, portal string, args ...string) (string, error) {
	return a.run(ctx, append([]string{"-m", "node", "-T", iqn, "-p", portal}, args...)...)
}

func (a *Iscsiadm) update(ctx context.Context, iqn, portal, name, value string) error {
	_, err := a.node(ctx, iqn, portal, "-o", "update", "-n", name, "-v", value)
	return err
}

// Sessions lists the node's sessions. No sessions (exit 21) is an empty list.
func (a *Iscsiadm) Sessions(ctx context.Context) ([]Session, error) {
	out, err := a.run(ctx, "-m", "session")
	if IsExit(err, ExitNoObjsFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("listing iSCSI sessions: %w", err)
	}
	return ParseSessions(out), nil
}

// Login implements Initiator. Per portal that has no session yet: create the node record (which
// resets it to defaults), set node.session.scan=manual and node.startup=manual, set or clear
// CHAP, log in (exit 15, "session exists", counts as success), and on failure delete the record
// again. Then, with or without a new session, scan only the wanted LUN.
func (a *Iscsiadm) Login(ctx context.Context, req LoginRequest) (*LoginResult, error) {
	if err := req.Validate(); err != nil {
		return nil, fmt.Errorf("iSCSI login: %w", err)
	}
	sessions, err := a.Sessions(ctx)
	if err != nil {
		// Not fatal: a login to an existing session answers 15, which is success.
		a.log().WarnContext(ctx, "cannot list iSCSI sessions; logging in regardless", "error", err)
	}
	res := &LoginResult{Failed: map[string]error{}, LUN: req.LUN}
	for _, p := range req.Portals {
		if !hasSession(sessions, req.IQN, p) {
			if err := a.loginPortal(ctx, req, p); err != nil {
				res.Failed[p] = err
				a.log().WarnContext(ctx, "iSCSI login failed", "iqn", req.IQN, "portal", p, "error", err)
				continue
			}
		}
		if err := a.Devices.ScanLUN(req.IQN, p, req.LUN); err != nil {
			// The device wait that follows reports the missing device with its own bound.
			a.log().WarnContext(ctx, "LUN scan failed", "iqn", req.IQN, "portal", p, "lun", req.LUN, "error", err)
		} else if lun, err := a.Devices.DiskLUN(req.IQN, p, req.LUN); err != nil {
			a.log().WarnContext(ctx, "finding the disk LUN failed", "iqn", req.IQN, "portal", p, "lun", req.LUN, "error", err)
		} else {
			res.LUN = lun
		}
		res.LoggedIn = append(res.LoggedIn, p)
	}
	if len(res.LoggedIn) == 0 {
		errs := make([]error, 0, len(req.Portals))
		for _, p := range req.Portals {
			errs = append(errs, res.Failed[p])
		}
		return res, fmt.Errorf("iSCSI login to %s failed on every portal: %w", req.IQN, errors.Join(errs...))
	}
	return res, nil
}

func hasSession(sessions []Session, iqn, portal string) bool {
	for _, s := range sessions {
		if s.IQN == iqn && s.Portal == portal {
			return true
		}
	}
	return false
}

// loginPortal creates and fills the node record of one portal and logs in.
//
// CHAP secrets on argv. open-iscsi changes a node record only through
// `iscsiadm -m node -T <iqn> -p <portal> -o update -n <name> -v <value>`, so the session CHAP
// password (node.session.auth.password, and password_in for mutual CHAP) is an argument of one
// short-lived iscsiadm process per portal. The exposure, precisely:
//
//   - who: /proc/<pid>/cmdline is readable by every user unless /proc is mounted with
//     hidepid=2 (or =invisible). kubelet runs the driver, and so iscsiadm, in the host's PID
//     namespace, so any process there can see it (`ps -ef`): host users, and containers with
//     hostPID: true. Containers in their own PID namespace cannot.
//   - how long: the life of that iscsiadm, which locks open-iscsi's node database, rewrites the
//     record and exits: milliseconds, up to CommandTimeout if another iscsiadm holds the lock.
//   - at rest: open-iscsi keeps the secret in the node record file (root-only, under
//     /etc/iscsi/nodes or /var/lib/iscsi/nodes), as it does however the value is set; Logout and
//     a failed login delete the record.
//
// iscsiadm (2.1.8: its --help and man page list every option) has no way to read a value from
// stdin or a file, and none of its modes takes node settings any other way. The
// alternatives are writing the record file behind iscsiadm's back (its database lock, record
// directory and file format are internals that differ between builds) or speaking iscsid's
// management protocol directly (it passes the C struct of the installed version). Both trade a
// millisecond-long, documented exposure for silent breakage on another distribution, so the
// driver does neither. Nodes that must not show it: mount /proc with hidepid=2 (root processes
// such as kubelet and the driver are unaffected) and admit no hostPID pods (Pod Security
// "baseline"). Logs never show it: the command log redacts every value whose name contains
// "password" (redactArgs).
func (a *Iscsiadm) loginPortal(ctx context.Context, req LoginRequest, p string) error {
	if _, err := a.node(ctx, req.IQN, p, "-o", "new"); err != nil {
		return fmt.Errorf("creating node record: %w", err)
	}
	settings := [][2]string{
		{"node.session.scan", "manual"},
		{"node.startup", "manual"},
	}
	if c := req.CHAP; c != nil {
		settings = append(settings,
			[2]string{"node.session.auth.authmethod", "CHAP"},
			[2]string{"node.session.auth.username", c.Username},
			[2]string{"node.session.auth.password", c.Password})
		if c.UsernameIn != "" {
			settings = append(settings,
				[2]string{"node.session.auth.username_in", c.UsernameIn},
				[2]string{"node.session.auth.password_in", c.PasswordIn})
		}
	} else {
		settings = append(settings, [2]string{"node.session.auth.authmethod", "None"})
	}
	for _, s := range settings {
		if err := a.update(ctx, req.IQN, p, s[0], s[1]); err != nil {
			a.deleteRecord(ctx, req.IQN, p)
			return fmt.Errorf("setting %s: %w", s[0], err)
		}
	}
	_, err := a.node(ctx, req.IQN, p, "--login")
	if err == nil || IsExit(err, ExitSessExists) {
		return nil
	}
	a.deleteRecord(ctx, req.IQN, p)
	return fmt.Errorf("login: %w", err)
}

func (a *Iscsiadm) deleteRecord(ctx context.Context, iqn, portal string) {
	if _, err := a.node(ctx, iqn, portal, "-o", "delete"); err != nil && !IsExit(err, ExitNoObjsFound) {
		a.log().WarnContext(ctx, "deleting iSCSI node record failed", "iqn", iqn, "portal", portal, "error", err)
	}
}

// Logout implements Initiator, in the in-tree plugin's order: flush the multipath map and
// delete the SCSI devices of the LUN, log out of every portal (exit 21 "no matching sessions"
// and 2 "session not found" are success), then delete the node records (21 is success).
func (a *Iscsiadm) Logout(ctx context.Context, req LogoutRequest) error {
	if err := req.Validate(); err != nil {
		return fmt.Errorf("iSCSI logout: %w", err)
	}
	flushed := map[string]bool{}
	for _, p := range req.Portals {
		dev, err := ResolveBlockDevice(a.Devices.ByPathLink(p, req.IQN, req.LUN))
		if err != nil {
			continue // no device on this path (already gone, or never scanned)
		}
		if a.Multipath {
			if dm, _ := a.Devices.MultipathHolder(dev); dm != "" && !flushed[dm] {
				flushed[dm] = true
				mp := a.MultipathCommand
				if mp == "" {
					mp = "multipath"
				}
				if _, err := a.exec(ctx, mp, "-f", dm); err != nil {
					a.log().WarnContext(ctx, "multipath flush failed", "device", dm, "error", err)
				}
			}
		}
		if strings.HasPrefix(dev[strings.LastIndex(dev, "/")+1:], "sd") {
			if err := a.Devices.DeleteSCSIDevice(dev); err != nil {
				a.log().WarnContext(ctx, "deleting SCSI device failed", "device", dev, "error", err)
			}
		}
	}
	var errs []error
	for _, p := range req.Portals {
		_, err := a.node(ctx, req.IQN, p, "--logout")
		if err != nil && !IsExit(err, ExitNoObjsFound, ExitSessNotFound) {
			errs = append(errs, fmt.Errorf("logout of %s on %s: %w", req.IQN, p, err))
			continue
		}
		if _, err := a.node(ctx, req.IQN, p, "-o", "delete"); err != nil && !IsExit(err, ExitNoObjsFound) {
			errs = append(errs, fmt.Errorf("deleting node record of %s on %s: %w", req.IQN, p, err))
		}
	}
	return errors.Join(errs...)
}
