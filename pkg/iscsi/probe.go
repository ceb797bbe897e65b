package iscsi

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"syscall"
	"time"
)

// This file is the pure-Go iSCSI discovery probe: TCP connect, Login with
// SessionType=Discovery under the node's initiator name (optionally with CHAP), a Text
// request SendTargets=All, Logout. It needs no kernel iSCSI support and no iscsid, so the
// node agent can tell "this node's initiator can use this portal" without touching the
// node's session database. A portal counts as reachable in the node report only when this
// whole exchange succeeds, not on a mere TCP connect (see pkg/placement, the report's home).

// Sentinel errors for the ways a probe fails; match them with errors.Is. Every error Probe
// returns is a *ProbeError that matches exactly one of them.
var (
	// ErrConnRefused: nothing listens on the portal (TCP RST).
	ErrConnRefused = errors.New("connection refused")
	// ErrUnreachable: the network has no route to the portal, or the connection broke.
	ErrUnreachable = errors.New("unreachable")
	// ErrTimeout: the deadline passed (connect, or a target that stopped answering).
	ErrTimeout = errors.New("timeout")
	// ErrLoginRejected: the target answered the Login with a non-success status other than
	// an authentication failure (e.g. service unavailable, redirection, forbidden).
	ErrLoginRejected = errors.New("login rejected")
	// ErrAuthFailed: CHAP failed in either direction, or the target demands an
	// authentication method the probe was not configured for.
	ErrAuthFailed = errors.New("authentication failed")
	// ErrTargetNotVisible: discovery worked, but a target listed in
	// ProbeOptions.WantTargets is not among those the portal shows this initiator.
	ErrTargetNotVisible = errors.New("target not visible to this initiator")
	// ErrProtocol: the target broke the iSCSI protocol (malformed PDU, unexpected opcode,
	// Reject, failed Logout).
	ErrProtocol = errors.New("iSCSI protocol error")
)

// ProbeError describes a failed probe. Error() includes the portal; Reason() does not, for
// reports that already key by portal.
type ProbeError struct {
	// Portal is the host:port probed.
	Portal string
	// Step is the phase that failed: "connect", "login", "sendtargets", "logout".
	Step string
	// Kind is one of the sentinel errors above.
	Kind error
	// StatusClass and StatusDetail hold the Login response status when the target
	// rejected the login (zero otherwise).
	StatusClass, StatusDetail byte
	// Err is the underlying error (may be nil when Kind says it all).
	Err error
}

// Reason is a short human explanation without the portal, e.g. "connection refused" or
// "login rejected: target error 0x0301 (service unavailable)".
func (e *ProbeError) Reason() string {
	switch {
	case e.Err == nil:
		return fmt.Sprintf("%s during %s", e.Kind, e.Step)
	case e.Kind == ErrConnRefused:
		return "connection refused"
	case e.Kind == ErrTimeout:
		return fmt.Sprintf("timeout during %s: %v", e.Step, e.Err)
	}
	return fmt.Sprintf("%s during %s: %v", e.Kind, e.Step, e.Err)
}

func (e *ProbeError) Error() string { return "iSCSI portal " + e.Portal + ": " + e.Reason() }

// Unwrap returns both the kind and the cause, so errors.Is works for the sentinel kinds and
// for causes like syscall.ECONNREFUSED or context.DeadlineExceeded.
func (e *ProbeError) Unwrap() []error {
	if e.Err == nil {
		return []error{e.Kind}
	}
	return []error{e.Kind, e.Err}
}

// ProbeOptions configure one discovery probe.
type ProbeOptions struct {
	// InitiatorName is this node's iSCSI initiator name (required); targets filter
	// SendTargets answers and ACLs by it.
	InitiatorName string
	// CHAP, when set, authenticates the discovery session.
	CHAP *DiscoveryCHAP
	// Timeout bounds the whole probe (connect to logout). Zero means DefaultProbeTimeout.
	// A context deadline that comes earlier wins.
	Timeout time.Duration
	// WantTargets, when set, lists target names that must be visible to this initiator;
	// a missing one fails the probe with ErrTargetNotVisible.
	WantTargets []string
	// DialContext dials the portal; nil means a net.Dialer. Tests use it to inject faults.
	DialContext func(ctx context.Context, network, address string) (net.Conn, error)
}

// DefaultProbeTimeout bounds a probe whose options set no Timeout.
const DefaultProbeTimeout = 5 * time.Second

// ProbeResult is what a successful probe saw.
type ProbeResult struct {
	// Portal is the host:port probed.
	Portal string
	// Targets are the targets the portal showed this initiator (possibly none).
	Targets []DiscoveredTarget
	// RTT is the shortest round trip seen in the session: TCP connect, and each
	// request/response exchange (login steps, SendTargets, logout). The minimum filters
	// out one-off scheduling delays on either side and so estimates the network latency
	// plus the target's fastest answer.
	RTT time.Duration
	// ConnectTime is the TCP connect duration.
	ConnectTime time.Duration
	// Duration is the wall time of the whole probe.
	Duration time.Duration
}

// Probe runs one iSCSI discovery session against portal (host:port; the port defaults to
// 3260). It returns the targets this initiator may see, or a *ProbeError.
func Probe(ctx context.Context, portal string, opts ProbeOptions) (*ProbeResult, error) {
	start := time.Now()
	portal = withDefaultPort(portal)
	fail := func(step string, kind, err error) (*ProbeResult, error) {
		return nil, &ProbeError{Portal: portal, Step: step, Kind: kind, Err: err}
	}
	if err := validateInitiatorName(opts.InitiatorName); err != nil {
		return fail("login", ErrLoginRejected, fmt.Errorf("invalid initiator name: %w", err))
	}
	if opts.CHAP != nil {
		if err := opts.CHAP.validate(); err != nil {
			return fail("login", ErrAuthFailed, err)
		}
	}
	timeout := opts.Timeout
	if timeout <= 0 {
		timeout = DefaultProbeTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	dial := opts.DialContext
	if dial == nil {
		dial = (&net.Dialer{}).DialContext
	}
	conn, err := dial(ctx, "tcp", portal)
	connectTime := time.Since(start)
	if err != nil {
		return fail("connect", classifyNetErr(ctx, err), err)
	}
	defer func() { _ = conn.Close() }()
	// The connection follows the context: its deadline, and cancellation at any moment
	// (context.AfterFunc moves the deadline to the past, which unblocks Read and Write).
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	s := &discSession{
		ctx:    ctx,
		conn:   conn,
		r:      bufio.NewReader(conn),
		portal: portal,
		cmdSN:  1,
		rtt:    connectTime,
	}
	if _, err := rand.Read(s.isid[1:4]); err != nil {
		return fail("login", ErrProtocol, fmt.Errorf("generate ISID: %w", err))
	}
	// ISID type 10b ("random", RFC 7143 §11.12.5): A=0, B and C random, D=0.
	s.isid[0] = 0x80

	if err := s.login(opts); err != nil {
		return nil, err
	}
	targets, err := s.sendTargets()
	if err != nil {
		return nil, err
	}
	if err := s.logout(); err != nil {
		return nil, err
	}
	res := &ProbeResult{Portal: portal, Targets: targets, RTT: s.rtt, ConnectTime: connectTime, Duration: time.Since(start)}
	if missing := missingTargets(targets, opts.WantTargets); len(missing) > 0 {
		return res, &ProbeError{Portal: portal, Step: "sendtargets", Kind: ErrTargetNotVisible,
			Err: fmt.Errorf("initiator %s does not see %s (the portal shows %d target(s))",
				opts.InitiatorName, strings.Join(missing, ", "), len(targets))}
	}
	return res, nil
}

func withDefaultPort(portal string) string {
	if _, _, err := net.SplitHostPort(portal); err != nil {
		return net.JoinHostPort(strings.Trim(portal, "[]"), "3260")
	}
	return portal
}

func missingTargets(got []DiscoveredTarget, want []string) []string {
	var missing []string
	for _, w := range want {
		if !slices.ContainsFunc(got, func(t DiscoveredTarget) bool { return t.Name == w }) {
			missing = append(missing, w)
		}
	}
	return missing
}

// validateInitiatorName checks the iSCSI name forms of RFC 7143 §4.2.7 loosely: a known
// prefix and no characters that cannot appear in a text value.
func validateInitiatorName(n string) error {
	if n == "" {
		return errors.New("empty")
	}
	if len(n) > 223 {
		return fmt.Errorf("%d bytes, iSCSI names have at most 223", len(n))
	}
	if !strings.HasPrefix(n, "iqn.") && !strings.HasPrefix(n, "eui.") && !strings.HasPrefix(n, "naa.") {
		return fmt.Errorf("%q does not start with one of iqn. eui. naa", n)
	}
	if strings.ContainsAny(n, "\x00= \t\r\n") {
		return fmt.Errorf("%q contains a character not allowed in iSCSI names", n)
	}
	return nil
}

// classifyNetErr maps a network error to a probe error kind.
func classifyNetErr(ctx context.Context, err error) error {
	var ne net.Error
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return ErrConnRefused
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled),
		errors.As(err, &ne) && ne.Timeout():
		return ErrTimeout
	case ctx.Err() != nil:
		// A read unblocked by context cancellation reports "i/o timeout" or a closed
		// connection; the context knows the real reason.
		return ErrTimeout
	}
	return ErrUnreachable
}

// session is one discovery session on one TCP connection.
type discSession struct {
	ctx       context.Context
	conn      net.Conn
	r         *bufio.Reader
	portal    string
	isid      [6]byte
	tsih      uint16
	itt       uint32
	cmdSN     uint32
	expStatSN uint32
	rtt       time.Duration
}

func (s *discSession) fail(step string, kind, err error) *ProbeError {
	return &ProbeError{Portal: s.portal, Step: step, Kind: kind, Err: err}
}

// ioFail classifies an error from reading or writing the connection.
func (s *discSession) ioFail(step string, err error) *ProbeError {
	if errors.Is(err, errMalformed) {
		return s.fail(step, ErrProtocol, err)
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET) {
		// tgtd and others close the connection instead of answering some bad requests;
		// during login that is a rejection, later a broken session.
		if step == "login" {
			return s.fail(step, ErrLoginRejected, fmt.Errorf("target closed the connection: %w", err))
		}
		return s.fail(step, ErrUnreachable, fmt.Errorf("target closed the connection: %w", err))
	}
	return s.fail(step, classifyNetErr(s.ctx, err), err)
}

func (s *discSession) nextITT() uint32 {
	s.itt++
	if s.itt == reservedTag {
		s.itt = 1
	}
	return s.itt
}

// exchange sends req and returns the next response with the wanted opcode, answering
// NOP-In pings on the way. It records the round trip.
func (s *discSession) exchange(step string, req *pdu, want byte) (*pdu, error) {
	sent := time.Now()
	if _, err := s.conn.Write(req.marshal()); err != nil {
		return nil, s.ioFail(step, err)
	}
	for {
		resp, err := readPDU(s.r, maxDataSegment)
		if err != nil {
			return nil, s.ioFail(step, err)
		}
		if rtt := time.Since(sent); rtt < s.rtt {
			s.rtt = rtt
		}
		switch resp.opcode() {
		case want:
			if resp.itt() != req.itt() {
				return nil, s.fail(step, ErrProtocol, fmt.Errorf("response ITT 0x%08x does not match request ITT 0x%08x", resp.itt(), req.itt()))
			}
			return resp, nil
		case opNopIn:
			// A target ping (TTT set) must be answered; an unsolicited NOP-In without a TTT
			// needs nothing.
			if resp.ttt() != reservedTag {
				if err := s.nopOut(resp); err != nil {
					return nil, s.ioFail(step, err)
				}
			}
		case opReject:
			return nil, s.fail(step, ErrProtocol, fmt.Errorf("target rejected the %s request: %s (reason 0x%02x)",
				step, rejectReasonText(resp.bhs[2]), resp.bhs[2]))
		case opAsyncMsg:
			return nil, s.fail(step, ErrProtocol, fmt.Errorf("target sent an asynchronous message (event %d) instead of answering", resp.bhs[36]))
		default:
			return nil, s.fail(step, ErrProtocol, fmt.Errorf("unexpected PDU opcode 0x%02x, want 0x%02x", resp.opcode(), want))
		}
	}
}

func (s *discSession) nopOut(ping *pdu) error {
	p := &pdu{}
	p.bhs[0] = opNopOut | flagImmediate
	p.bhs[1] = flagFinal
	copy(p.bhs[8:16], ping.bhs[8:16]) // LUN echoed
	binary.BigEndian.PutUint32(p.bhs[16:20], reservedTag)
	binary.BigEndian.PutUint32(p.bhs[20:24], ping.ttt())
	binary.BigEndian.PutUint32(p.bhs[24:28], s.cmdSN)
	binary.BigEndian.PutUint32(p.bhs[28:32], ping.statSN()+1)
	_, err := s.conn.Write(p.marshal())
	return err
}

// loginPDU builds a Login Request for the current stage.
func (s *discSession) loginPDU(transit bool, csg, nsg byte, itt uint32, pairs []textKV) *pdu {
	p := &pdu{data: encodeText(pairs)}
	p.bhs[0] = opLoginReq | flagImmediate // Login requests are always immediate.
	p.bhs[1] = csg<<2 | nsg
	if transit {
		p.bhs[1] |= flagTransit
	} else {
		p.bhs[1] &^= 0x03 // NSG is reserved when T=0
	}
	p.bhs[2], p.bhs[3] = 0, 0 // Version-max, Version-min: 0 is the only iSCSI version.
	copy(p.bhs[8:14], s.isid[:])
	binary.BigEndian.PutUint16(p.bhs[14:16], s.tsih)
	binary.BigEndian.PutUint32(p.bhs[16:20], itt)
	// CID 0 at bytes 20-21.
	binary.BigEndian.PutUint32(p.bhs[24:28], s.cmdSN)
	binary.BigEndian.PutUint32(p.bhs[28:32], s.expStatSN)
	return p
}

// loginStep sends one Login request and collects the complete text answer, following the
// C (continue) bit: a target may split a long answer across several Login responses, each
// requested with an empty Login request.
func (s *discSession) loginStep(transit bool, csg, nsg byte, pairs []textKV) (flags byte, keys map[string]string, err error) {
	itt := s.nextITT()
	var data []byte
	req := s.loginPDU(transit, csg, nsg, itt, pairs)
	for range 16 {
		resp, err := s.exchange("login", req, opLoginResp)
		if err != nil {
			return 0, nil, err
		}
		class, detail := resp.bhs[36], resp.bhs[37]
		if class != statusClassSuccess {
			return 0, nil, s.loginStatusErr(class, detail, resp)
		}
		s.tsih = binary.BigEndian.Uint16(resp.bhs[14:16])
		s.expStatSN = resp.statSN() + 1
		data = append(data, resp.data...)
		if len(data) > maxDataSegment {
			return 0, nil, s.fail("login", ErrProtocol, fmt.Errorf("login response text longer than %d bytes", maxDataSegment))
		}
		if resp.flags()&flagContinue == 0 {
			pairs, err := parseText(data)
			if err != nil {
				return 0, nil, s.fail("login", ErrProtocol, err)
			}
			keys = make(map[string]string, len(pairs))
			for _, p := range pairs {
				keys[p.Key] = p.Value
			}
			return resp.flags(), keys, nil
		}
		req = s.loginPDU(false, csg, 0, itt, nil)
	}
	return 0, nil, s.fail("login", ErrProtocol, errors.New("login response continued for more than 16 PDUs"))
}

func (s *discSession) loginStatusErr(class, detail byte, resp *pdu) *ProbeError {
	code := uint16(class)<<8 | uint16(detail)
	msg := fmt.Sprintf("%s (status 0x%04x)", loginStatusText(class, detail), code)
	if class == statusClassRedirect {
		if pairs, err := parseText(resp.data); err == nil {
			for _, p := range pairs {
				if p.Key == "TargetAddress" {
					msg += " to " + p.Value
				}
			}
		}
	}
	kind := ErrLoginRejected
	if code == statusAuthFailure {
		kind = ErrAuthFailed
	}
	return &ProbeError{Portal: s.portal, Step: "login", Kind: kind, StatusClass: class, StatusDetail: detail, Err: errors.New(msg)}
}

// login negotiates a discovery session up to the full feature phase.
func (s *discSession) login(opts ProbeOptions) error {
	first := []textKV{
		{"InitiatorName", opts.InitiatorName},
		{"SessionType", "Discovery"},
		{"AuthMethod", offerAuthMethods(opts.CHAP)},
	}
	stage := byte(stageSecurity)
	if opts.CHAP == nil {
		// AuthMethod=None: ask to move on to the operational stage right away.
		flags, keys, err := s.loginStep(true, stageSecurity, stageOperational, first)
		if err != nil {
			return err
		}
		if am := keys["AuthMethod"]; am != "" && am != "None" {
			return s.fail("login", ErrAuthFailed, fmt.Errorf("target requires AuthMethod %s; configure discovery CHAP for this backstore", am))
		}
		if stage, err = s.transit(flags, stageSecurity); err != nil {
			return err
		}
	} else {
		var err error
		if stage, err = s.chapLogin(opts.CHAP, first); err != nil {
			return err
		}
	}
	// A target may answer T=0 while it still negotiates; loop a bounded number of times.
	for range 8 {
		if stage == stageFullFeature {
			return nil
		}
		var pairs []textKV
		if stage == stageOperational {
			pairs = operationalKeys
		}
		flags, _, err := s.loginStep(true, stage, stageFullFeature, pairs)
		if err != nil {
			return err
		}
		if stage, err = s.transit(flags, stage); err != nil {
			return err
		}
	}
	return s.fail("login", ErrProtocol, errors.New("target did not reach the full feature phase after 8 login exchanges"))
}

// operationalKeys are the operational parameters a discovery session negotiates (RFC 7143
// §13: session keys that only apply to normal sessions are irrelevant here). The probe
// sends only tiny PDUs and bounds what it reads with MaxRecvDataSegmentLength.
var operationalKeys = []textKV{
	{"HeaderDigest", "None"},
	{"DataDigest", "None"},
	{"DefaultTime2Wait", "0"},
	{"DefaultTime2Retain", "0"},
	{"ErrorRecoveryLevel", "0"},
	{"MaxRecvDataSegmentLength", fmt.Sprint(maxDataSegment)},
}

// transit returns the stage after a Login response: NSG when the target set T, else the
// current stage.
func (s *discSession) transit(flags, cur byte) (byte, error) {
	if flags&flagTransit == 0 {
		return cur, nil
	}
	nsg := flags & 0x03
	if nsg != stageOperational && nsg != stageFullFeature || nsg <= cur {
		return 0, s.fail("login", ErrProtocol, fmt.Errorf("target moved from login stage %d to invalid stage %d", cur, nsg))
	}
	return nsg, nil
}

// chapLogin runs the security stage with CHAP (RFC 7143 §12.1.3) and returns the next
// stage.
func (s *discSession) chapLogin(creds *DiscoveryCHAP, first []textKV) (byte, error) {
	authFail := func(err error) (byte, error) { return 0, s.fail("login", ErrAuthFailed, err) }
	flags, keys, err := s.loginStep(false, stageSecurity, stageSecurity, first)
	if err != nil {
		return 0, err
	}
	switch am := keys["AuthMethod"]; am {
	case "CHAP":
	case "None":
		if creds.mutual() {
			return authFail(errors.New("target refused CHAP (answered AuthMethod=None) but mutual CHAP is configured"))
		}
		// The target does not require discovery authentication.
		if flags&flagTransit == 0 {
			if flags, err = s.loginStepTransit(stageSecurity, stageOperational); err != nil {
				return 0, err
			}
		}
		return s.transit(flags, stageSecurity)
	default:
		return authFail(fmt.Errorf("target did not accept AuthMethod=%s (answered %q)", offerAuthMethods(creds), am))
	}
	_, keys, err = s.loginStep(false, stageSecurity, stageSecurity, []textKV{{"CHAP_A", "5"}})
	if err != nil {
		return 0, err
	}
	st := &chapState{creds: creds}
	answer, err := st.answer(keys)
	if err != nil {
		return authFail(err)
	}
	flags, keys, err = s.loginStep(true, stageSecurity, stageOperational, answer)
	if err != nil {
		return 0, err
	}
	if err := st.verifyTarget(keys); err != nil {
		return authFail(err)
	}
	if flags&flagTransit == 0 {
		// Authentication succeeded but the target wants another round before moving on.
		if flags, err = s.loginStepTransit(stageSecurity, stageOperational); err != nil {
			return 0, err
		}
		if flags&flagTransit == 0 {
			return 0, s.fail("login", ErrProtocol, errors.New("target stays in the security stage after CHAP succeeded"))
		}
	}
	return s.transit(flags, stageSecurity)
}

func (s *discSession) loginStepTransit(csg, nsg byte) (byte, error) {
	flags, _, err := s.loginStep(true, csg, nsg, nil)
	return flags, err
}

// maxSendTargetsText bounds the accumulated SendTargets answer (many PDUs with the C bit):
// 4 MiB is tens of thousands of targets, far beyond any real portal.
const maxSendTargetsText = 4 << 20

// sendTargets asks for every target this initiator may see and follows continuations.
func (s *discSession) sendTargets() ([]DiscoveredTarget, error) {
	itt := s.nextITT()
	ttt := uint32(reservedTag)
	body := encodeText([]textKV{{"SendTargets", "All"}})
	var data []byte
	for i := 0; ; i++ {
		if i > 1024 {
			return nil, s.fail("sendtargets", ErrProtocol, errors.New("SendTargets answer continued for more than 1024 PDUs"))
		}
		p := &pdu{data: body}
		p.bhs[0] = opTextReq
		p.bhs[1] = flagFinal
		binary.BigEndian.PutUint32(p.bhs[16:20], itt)
		binary.BigEndian.PutUint32(p.bhs[20:24], ttt)
		binary.BigEndian.PutUint32(p.bhs[24:28], s.cmdSN)
		binary.BigEndian.PutUint32(p.bhs[28:32], s.expStatSN)
		resp, err := s.exchange("sendtargets", p, opTextResp)
		if err != nil {
			return nil, err
		}
		s.cmdSN++ // Text requests are non-immediate: each one takes a CmdSN.
		s.expStatSN = resp.statSN() + 1
		data = append(data, resp.data...)
		if len(data) > maxSendTargetsText {
			return nil, s.fail("sendtargets", ErrProtocol, fmt.Errorf("SendTargets answer longer than %d bytes", maxSendTargetsText))
		}
		final := resp.flags()&flagFinal != 0 && resp.flags()&flagContinue == 0
		if final {
			break
		}
		// More to come: ask for it with an empty request carrying the target's TTT.
		ttt = resp.ttt()
		body = nil
	}
	pairs, err := parseText(data)
	if err != nil {
		return nil, s.fail("sendtargets", ErrProtocol, err)
	}
	targets, err := parseSendTargets(pairs)
	if err != nil {
		return nil, s.fail("sendtargets", ErrProtocol, err)
	}
	return targets, nil
}

// logout closes the session (reason 0, "close the session").
func (s *discSession) logout() error {
	p := &pdu{}
	p.bhs[0] = opLogoutReq | flagImmediate
	p.bhs[1] = flagFinal // reason code 0 in the low 7 bits
	binary.BigEndian.PutUint32(p.bhs[16:20], s.nextITT())
	binary.BigEndian.PutUint32(p.bhs[24:28], s.cmdSN)
	binary.BigEndian.PutUint32(p.bhs[28:32], s.expStatSN)
	resp, err := s.exchange("logout", p, opLogoutResp)
	if err != nil {
		return err
	}
	if r := resp.bhs[2]; r != 0 {
		return s.fail("logout", ErrProtocol, fmt.Errorf("logout response %d (%s)", r, logoutResponseText(r)))
	}
	return nil
}

func logoutResponseText(r byte) string {
	switch r {
	case 1:
		return "CID not found"
	case 2:
		return "connection recovery not supported"
	case 3:
		return "cleanup failed"
	}
	return "unknown"
}
