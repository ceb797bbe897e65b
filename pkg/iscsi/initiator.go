package iscsi

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"
)

// This file is the node-side initiator contract used by the FlexVolume driver: log in to a
// volume's target on its portals and log out again. Iscsiadm (iscsiadm.go) implements it with
// open-iscsi; tests plug in a stand-in that attaches a loop device instead.

// Initiator logs this node in to, and out of, an iSCSI target. Implementations must be
// idempotent: logging in to a portal that already has a session, or out of one that has none,
// is success.
type Initiator interface {
	// Login makes sure a session exists on every portal of req that can be reached and that the
	// target's LUN is scanned. It fails only when no portal could be logged in; the result says
	// which portals failed and why.
	Login(ctx context.Context, req LoginRequest) (*LoginResult, error)
	// Logout removes this node's devices of the target's LUN, logs out of every portal and
	// deletes the node records.
	Logout(ctx context.Context, req LogoutRequest) error
}

// LoginRequest names the target and how to authenticate.
type LoginRequest struct {
	// IQN of the target (validated by ValidateIQN).
	IQN string
	// Portals as ip:port (validated by ParsePortal).
	Portals []string
	// LUN to scan; Datera exposes LUN 0.
	LUN int
	// CHAP, when set, authenticates the session (node.session.auth.*).
	CHAP *SessionCHAP
}

// LogoutRequest names the target to leave.
type LogoutRequest struct {
	IQN     string
	Portals []string
	LUN     int
}

// LoginResult tells which portals have a session.
type LoginResult struct {
	// LoggedIn lists the portals with a session, in request order.
	LoggedIn []string
	// Failed maps the other portals to why they failed.
	Failed map[string]error
	// LUN is the volume's disk as found on the target: the requested LUN, or the one disk
	// behind it when the requested LUN is another kind of device (Devices.DiskLUN).
	LUN int
}

// Validate checks the request before anything reaches a command line.
func (r LoginRequest) Validate() error {
	if err := ValidateIQN(r.IQN); err != nil {
		return err
	}
	if err := validatePortals(r.Portals); err != nil {
		return err
	}
	if r.LUN < 0 || r.LUN > 16383 {
		return fmt.Errorf("LUN %d out of range", r.LUN)
	}
	if r.CHAP != nil {
		return r.CHAP.Validate()
	}
	return nil
}

// Validate checks the request before anything reaches a command line.
func (r LogoutRequest) Validate() error {
	if err := ValidateIQN(r.IQN); err != nil {
		return err
	}
	if r.LUN < 0 || r.LUN > 16383 {
		return fmt.Errorf("LUN %d out of range", r.LUN)
	}
	return validatePortals(r.Portals)
}

func validatePortals(portals []string) error {
	if len(portals) == 0 {
		return errors.New("no portal")
	}
	for _, p := range portals {
		norm, err := ParsePortal(p)
		if err != nil {
			return err
		}
		if norm != p {
			return fmt.Errorf("portal %q is not in canonical ip:port form (%q)", p, norm)
		}
	}
	return nil
}

// SessionCHAP holds the session CHAP credentials written to node.session.auth.*. Username and
// Password authenticate this initiator to the target; UsernameIn and PasswordIn, when set, make
// it mutual. Secrets never appear in logs or errors.
type SessionCHAP struct {
	Username   string
	Password   string
	UsernameIn string
	PasswordIn string
}

// Validate checks that the fields come in pairs and are safe to pass to iscsiadm.
func (c *SessionCHAP) Validate() error {
	if c.Username == "" || c.Password == "" {
		return errors.New("CHAP needs both a username and a password")
	}
	if (c.UsernameIn == "") != (c.PasswordIn == "") {
		return errors.New("mutual CHAP needs both username_in and password_in")
	}
	for _, f := range []struct{ name, v string }{
		{"username", c.Username}, {"password", c.Password},
		{"username_in", c.UsernameIn}, {"password_in", c.PasswordIn},
	} {
		if strings.ContainsAny(f.v, "\x00\r\n") || strings.HasPrefix(f.v, "-") {
			return fmt.Errorf("CHAP %s contains a character iscsiadm cannot take", f.name)
		}
	}
	return nil
}

// LogValue keeps the secrets out of structured logs.
func (c SessionCHAP) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("username", c.Username),
		slog.Bool("mutual", c.UsernameIn != ""),
	)
}

// String keeps the secrets out of fmt output.
func (c SessionCHAP) String() string {
	return fmt.Sprintf("SessionCHAP{Username:%q Mutual:%t}", c.Username, c.UsernameIn != "")
}

// ValidateIQN checks a target or initiator name before it becomes part of a file name (the
// by-path link) or a command line: an iqn. or eui. name of at most 223 bytes without "/",
// whitespace or control characters.
func ValidateIQN(name string) error {
	switch {
	case len(name) < 8 || len(name) > 223:
		return fmt.Errorf("iSCSI name %q: length %d not in 8..223", clip(name), len(name))
	case strings.HasPrefix(name, "iqn."):
		// iqn.yyyy-mm.reversed.domain[:unique]
		rest := name[4:]
		if len(rest) < 8 || !isDigits(rest[0:4]) || rest[4] != '-' || !isDigits(rest[5:7]) || rest[7] != '.' {
			return fmt.Errorf("iSCSI name %q: want iqn.yyyy-mm.naming-authority[:unique]", clip(name))
		}
	case strings.HasPrefix(name, "eui."):
		if len(name) != 20 || !isHex(name[4:]) {
			return fmt.Errorf("iSCSI name %q: want eui.<16 hex digits>", clip(name))
		}
	default:
		return fmt.Errorf("iSCSI name %q: must start with \"iqn.\" or \"eui.\"", clip(name))
	}
	for _, r := range name {
		if r <= ' ' || r == '/' || r == 0x7f || r == '\\' {
			return fmt.Errorf("iSCSI name %q: contains %q", clip(name), r)
		}
	}
	return nil
}

// ParsePortal parses an iSCSI portal "ip:port" (IPv6 as "[ip]:port") and returns its canonical
// form. Host names are refused: the by-path link and the node record are keyed by address.
func ParsePortal(portal string) (string, error) {
	host, port, err := net.SplitHostPort(portal)
	if err != nil {
		return "", fmt.Errorf("portal %q: want ip:port: %w", clip(portal), err)
	}
	addr, err := netip.ParseAddr(host)
	if err != nil || addr.Zone() != "" {
		return "", fmt.Errorf("portal %q: %q is not an IP address", clip(portal), clip(host))
	}
	p, err := strconv.Atoi(port)
	if err != nil || p < 1 || p > 65535 {
		return "", fmt.Errorf("portal %q: bad port %q", clip(portal), port)
	}
	return netip.AddrPortFrom(addr.Unmap(), uint16(p)).String(), nil
}

// byPathPortal is the portal as udev writes it into by-path names: IPv6 without brackets.
func byPathPortal(portal string) string {
	ap, err := netip.ParseAddrPort(portal)
	if err != nil {
		return portal
	}
	return ap.Addr().String() + ":" + strconv.Itoa(int(ap.Port()))
}

func isDigits(s string) bool {
	for _, r := range s {
		if r < '0' || r > '9' {
			return false
		}
	}
	return s != ""
}

func isHex(s string) bool {
	for _, r := range s {
		if !strings.ContainsRune("0123456789abcdefABCDEF", r) {
			return false
		}
	}
	return s != ""
}

func clip(s string) string {
	if len(s) > 80 {
		return s[:80] + "…"
	}
	return s
}
