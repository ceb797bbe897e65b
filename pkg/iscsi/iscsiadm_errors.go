package iscsi

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// ExitCode is an iscsiadm exit status (man 8 iscsiadm, "EXIT STATUS").
type ExitCode int

// The iscsiadm exit codes the driver distinguishes.
const (
	ExitSuccess         ExitCode = 0
	ExitGeneric         ExitCode = 1  // ISCSI_ERR
	ExitSessNotFound    ExitCode = 2  // ISCSI_ERR_SESS_NOT_FOUND
	ExitTrans           ExitCode = 4  // ISCSI_ERR_TRANS: connect problem
	ExitLogin           ExitCode = 5  // ISCSI_ERR_LOGIN: generic login failure
	ExitIDBM            ExitCode = 6  // ISCSI_ERR_IDBM: node database error
	ExitInvalid         ExitCode = 7  // ISCSI_ERR_INVAL
	ExitTransTimeout    ExitCode = 8  // ISCSI_ERR_TRANS_TIMEOUT: connection timed out
	ExitTransNotFound   ExitCode = 12 // ISCSI_ERR_TRANS_NOT_FOUND: iscsi_tcp not loaded
	ExitAccess          ExitCode = 13 // ISCSI_ERR_ACCESS
	ExitSessExists      ExitCode = 15 // ISCSI_ERR_SESS_EXISTS: already logged in
	ExitFatalLogin      ExitCode = 19 // ISCSI_ERR_FATAL_LOGIN: e.g. target not found / not allowed
	ExitISCSIDNotConn   ExitCode = 20 // ISCSI_ERR_ISCSID_NOTCONN: iscsid not running
	ExitNoObjsFound     ExitCode = 21 // ISCSI_ERR_NO_OBJS_FOUND: no records/sessions
	ExitLoginAuthFailed ExitCode = 24 // ISCSI_ERR_LOGIN_AUTH_FAILED: CHAP refused
)

var exitText = map[ExitCode]string{
	ExitGeneric:         "generic error",
	ExitSessNotFound:    "session not found",
	ExitTrans:           "connect problem",
	ExitLogin:           "login failure",
	ExitIDBM:            "iSCSI node database error",
	ExitInvalid:         "invalid argument",
	ExitTransTimeout:    "connection timed out",
	ExitTransNotFound:   "iSCSI transport (iscsi_tcp) not loaded",
	ExitAccess:          "permission denied",
	ExitSessExists:      "session exists",
	ExitFatalLogin:      "non-retryable login failure (target not found or access denied)",
	ExitISCSIDNotConn:   "could not connect to iscsid",
	ExitNoObjsFound:     "no records or sessions found",
	ExitLoginAuthFailed: "login failed due to authorization failure (CHAP)",
}

func (c ExitCode) String() string {
	if t, ok := exitText[c]; ok {
		return strconv.Itoa(int(c)) + " " + t
	}
	return strconv.Itoa(int(c))
}

// AdmError is a failed iscsiadm (or multipath) command.
type AdmError struct {
	Command string
	// Args with secret values replaced by "(redacted)".
	Args []string
	// Code is the exit status, -1 when the command did not exit (not found, timeout, killed).
	Code ExitCode
	// Output is the combined output, trimmed.
	Output string
	Err    error
}

func (e *AdmError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s: ", e.Command, strings.Join(e.Args, " "))
	if e.Code >= 0 {
		fmt.Fprintf(&b, "exit %s", e.Code)
	} else {
		fmt.Fprintf(&b, "%v", e.Err)
	}
	if msg := lastLines(e.Output, 3); msg != "" {
		fmt.Fprintf(&b, ": %s", msg)
	}
	return b.String()
}

func (e *AdmError) Unwrap() error { return e.Err }

// IsExit reports whether err is an AdmError with one of the exit codes.
func IsExit(err error, codes ...ExitCode) bool {
	var ae *AdmError
	if !errors.As(err, &ae) || ae.Code < 0 {
		return false
	}
	for _, c := range codes {
		if ae.Code == c {
			return true
		}
	}
	return false
}

// lastLines keeps the tail of iscsiadm's output, dropping the systemd/daemon-connect noise it
// prints on hosts without iscsid.
func lastLines(out string, n int) string {
	var keep []string
	for _, l := range strings.Split(out, "\n") {
		l = strings.TrimSpace(l)
		if l == "" || strings.HasPrefix(l, "System has not been booted with systemd") ||
			strings.HasPrefix(l, "Failed to connect to bus") {
			continue
		}
		keep = append(keep, l)
	}
	if len(keep) > n {
		keep = keep[len(keep)-n:]
	}
	return strings.Join(keep, " | ")
}

// redactArgs hides the value of every -v that follows a -n naming a password.
func redactArgs(args []string) []string {
	out := append([]string(nil), args...)
	secret := false
	for i := 0; i < len(out); i++ {
		switch out[i] {
		case "-n", "--name":
			if i+1 < len(out) {
				secret = strings.Contains(strings.ToLower(out[i+1]), "password")
			}
		case "-v", "--value":
			if secret && i+1 < len(out) {
				out[i+1] = "(redacted)"
				secret = false
				i++
			}
		}
	}
	return out
}

// ParseSessions parses `iscsiadm -m session` lines such as
//
//	tcp: [1] 192.168.1.10:3260,1 iqn.2013-05.com.daterainc:tc:01:sn:abc (non-flash)
//	tcp: [2] [fd00::1]:3260,1 iqn.2013-05.com.daterainc:tc:01:sn:def (non-flash)
//
// Lines it cannot read are skipped.
func ParseSessions(out string) []Session {
	var sessions []Session
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) < 4 || !strings.HasSuffix(f[0], ":") || !strings.HasPrefix(f[1], "[") || !strings.HasSuffix(f[1], "]") {
			continue
		}
		sid, err := strconv.Atoi(strings.Trim(f[1], "[]"))
		if err != nil {
			continue
		}
		comma := strings.LastIndex(f[2], ",")
		if comma < 0 {
			continue
		}
		tpgt, err := strconv.Atoi(f[2][comma+1:])
		if err != nil {
			continue
		}
		ap, err := netip.ParseAddrPort(f[2][:comma])
		if err != nil {
			continue
		}
		sessions = append(sessions, Session{
			Transport: strings.TrimSuffix(f[0], ":"), SID: sid,
			Portal: netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()).String(), TPGT: tpgt, IQN: f[3],
		})
	}
	return sessions
}
