package iscsi

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	utilexec "k8s.io/utils/exec"
	testingexec "k8s.io/utils/exec/testing"
)

// Outputs below were recorded from open-iscsi 2.1.8 (Debian 12) on this machine where it can
// run without iscsid (node database operations, exit 20 and 21), and taken from open-iscsi's
// messages for the login outcomes that need a kernel initiator (exit codes per man 8 iscsiadm).
const (
	testIQN  = "iqn.2013-05.com.daterainc:tc:01:sn:0123456789abcdef"
	portalA  = "192.0.2.1:3260"
	portalB  = "192.0.2.2:3260"
	noiscsid = "System has not been booted with systemd as init system (PID 1). Can't operate.\n" +
		"Failed to connect to bus: Host is down\n" +
		"iscsiadm: can not connect to iSCSI daemon (111)!\n"
	outNoSessions = "iscsiadm: No active sessions.\n"
	outNoRecords  = "iscsiadm: No records found\n"
	outNoMatching = "iscsiadm: No matching sessions found\n"
)

func outNewNode(portal string) string {
	return noiscsid + "New iSCSI node [tcp:[hw=,ip=,net_if=,iscsi_if=default] " +
		strings.Replace(portal, ":", ",", 1) + ",-1 " + testIQN + "] added\n"
}

func loginTarget(portal string) string {
	return "[iface: default, target: " + testIQN + ", portal: " + strings.Replace(portal, ":", ",", 1) + "]"
}

func outLoginOK(portal string) string {
	return "Logging in to " + loginTarget(portal) + "\nLogin to " + loginTarget(portal) + " successful.\n"
}

func outLoginErr(portal string, code int, text string) string {
	return "Logging in to " + loginTarget(portal) + "\n" +
		"iscsiadm: Could not login to " + loginTarget(portal) + ".\n" +
		"iscsiadm: initiator reported error (" + strconv.Itoa(code) + " - " + text + ")\n" +
		"iscsiadm: Could not log into all portals\n"
}

// step is one expected command: its argv after the binary, and what it answers.
type step struct {
	argv string
	out  string
	code int
}

// scripted returns an exec seam that checks every command against steps, in order.
func scripted(t *testing.T, steps []step) *testingexec.FakeExec {
	t.Helper()
	fe := &testingexec.FakeExec{ExactOrder: true}
	for i, s := range steps {
		fe.CommandScript = append(fe.CommandScript, func(cmd string, args ...string) utilexec.Cmd {
			got := strings.Join(append([]string{cmd}, args...), " ")
			assert.Equal(t, s.argv, got, "command %d", i)
			fc := &testingexec.FakeCmd{CombinedOutputScript: []testingexec.FakeAction{func() ([]byte, []byte, error) {
				if s.code != 0 {
					return []byte(s.out), nil, testingexec.FakeExitError{Status: s.code}
				}
				return []byte(s.out), nil, nil
			}}}
			return testingexec.InitFakeCmd(fc, cmd, args...)
		})
	}
	t.Cleanup(func() { assert.Equal(t, len(steps), fe.CommandCalls, "number of commands run") })
	return fe
}

func node(portal, rest string) string {
	return "iscsiadm -m node -T " + testIQN + " -p " + portal + " " + rest
}

func freshLogin(portal string, chap bool) []step {
	s := []step{
		{node(portal, "-o new"), outNewNode(portal), 0},
		{node(portal, "-o update -n node.session.scan -v manual"), "", 0},
		{node(portal, "-o update -n node.startup -v manual"), "", 0},
	}
	if chap {
		s = append(s,
			step{node(portal, "-o update -n node.session.auth.authmethod -v CHAP"), "", 0},
			step{node(portal, "-o update -n node.session.auth.username -v chapuser"), "", 0},
			step{node(portal, "-o update -n node.session.auth.password -v chapsecret123"), "", 0})
	} else {
		s = append(s, step{node(portal, "-o update -n node.session.auth.authmethod -v None"), "", 0})
	}
	return s
}

// sysfsSession builds the sysfs files of a session to testIQN on portal under root, as the
// kernel lays them out, and returns the host's scan file.
func sysfsSession(t *testing.T, root, host, session, portal string) string {
	t.Helper()
	sd := filepath.Join(root, "class", "iscsi_host", host, "device", session)
	require.NoError(t, os.MkdirAll(filepath.Join(sd, "iscsi_session", session), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(sd, "iscsi_session", session, "targetname"), []byte(testIQN+"\n"), 0o644))
	conn := filepath.Join(sd, "connection1:0", "iscsi_connection", "connection1:0")
	require.NoError(t, os.MkdirAll(conn, 0o755))
	ip, port, _ := strings.Cut(portal, ":")
	require.NoError(t, os.WriteFile(filepath.Join(conn, "persistent_address"), []byte(ip+"\n"), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(conn, "persistent_port"), []byte(port+"\n"), 0o644))
	scan := filepath.Join(root, "class", "scsi_host", host, "scan")
	require.NoError(t, os.MkdirAll(filepath.Dir(scan), 0o755))
	require.NoError(t, os.WriteFile(scan, nil, 0o644))
	return scan
}

func TestIscsiadmLogin(t *testing.T) {
	chap := &SessionCHAP{Username: "chapuser", Password: "chapsecret123"}
	tests := []struct {
		name       string
		portals    []string
		chap       *SessionCHAP
		steps      []step
		loggedIn   []string
		failed     map[string]ExitCode
		wantErr    ExitCode // 0: success
		wantScanOn []string
	}{
		{
			name:    "fresh login, no CHAP",
			portals: []string{portalA},
			steps: append(append([]step{{"iscsiadm -m session", outNoSessions, 21}}, freshLogin(portalA, false)...),
				step{node(portalA, "--login"), outLoginOK(portalA), 0}),
			loggedIn: []string{portalA}, wantScanOn: []string{portalA},
		},
		{
			name:    "fresh login with CHAP",
			portals: []string{portalA},
			chap:    chap,
			steps: append(append([]step{{"iscsiadm -m session", outNoSessions, 21}}, freshLogin(portalA, true)...),
				step{node(portalA, "--login"), outLoginOK(portalA), 0}),
			loggedIn: []string{portalA}, wantScanOn: []string{portalA},
		},
		{
			name:    "already logged in: no login, LUN still scanned",
			portals: []string{portalA},
			steps: []step{{"iscsiadm -m session",
				"tcp: [3] 192.0.2.1:3260,1 " + testIQN + " (non-flash)\n", 0}},
			loggedIn: []string{portalA}, wantScanOn: []string{portalA},
		},
		{
			name:    "session listing fails, login answers 15 session exists",
			portals: []string{portalA},
			steps: append(append([]step{{"iscsiadm -m session", noiscsid + "iscsiadm: could not connect to iscsid\n", 20}}, freshLogin(portalA, false)...),
				step{node(portalA, "--login"), "iscsiadm: default: 1 session requested, but 1 already present.\n", 15}),
			loggedIn: []string{portalA}, wantScanOn: []string{portalA},
		},
		{
			name:    "CHAP refused (24): record deleted, error",
			portals: []string{portalA},
			chap:    chap,
			steps: append(append([]step{{"iscsiadm -m session", outNoSessions, 21}}, freshLogin(portalA, true)...),
				step{node(portalA, "--login"), outLoginErr(portalA, 24, "iSCSI login failed due to authorization failure"), 24},
				step{node(portalA, "-o delete"), "", 0}),
			failed:  map[string]ExitCode{portalA: ExitLoginAuthFailed},
			wantErr: ExitLoginAuthFailed,
		},
		{
			name:    "no iscsid (20, as on this machine)",
			portals: []string{portalA},
			steps: append(append([]step{{"iscsiadm -m session", outNoSessions, 21}}, freshLogin(portalA, false)...),
				step{node(portalA, "--login"), noiscsid + outLoginErr(portalA, 20, "could not connect to iscsid"), 20},
				step{node(portalA, "-o delete"), "", 0}),
			failed:  map[string]ExitCode{portalA: ExitISCSIDNotConn},
			wantErr: ExitISCSIDNotConn,
		},
		{
			name:    "two portals, one times out (8): degraded but logged in",
			portals: []string{portalA, portalB},
			steps: append(append(append(append([]step{{"iscsiadm -m session", outNoSessions, 21}}, freshLogin(portalA, false)...),
				step{node(portalA, "--login"), outLoginOK(portalA), 0}),
				freshLogin(portalB, false)...),
				step{node(portalB, "--login"), outLoginErr(portalB, 8, "connection timed out"), 8},
				step{node(portalB, "-o delete"), outNoRecords, 21}),
			loggedIn: []string{portalA}, failed: map[string]ExitCode{portalB: ExitTransTimeout},
			wantScanOn: []string{portalA},
		},
		{
			name:    "record update fails (21: record vanished): record deleted, portal failed",
			portals: []string{portalA},
			steps: []step{
				{"iscsiadm -m session", outNoSessions, 21},
				{node(portalA, "-o new"), outNewNode(portalA), 0},
				{node(portalA, "-o update -n node.session.scan -v manual"), outNoRecords, 21},
				{node(portalA, "-o delete"), outNoRecords, 21},
			},
			failed: map[string]ExitCode{portalA: ExitNoObjsFound}, wantErr: ExitNoObjsFound,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sys := t.TempDir()
			scans := map[string]string{
				portalA: sysfsSession(t, sys, "host3", "session1", portalA),
				portalB: sysfsSession(t, sys, "host4", "session2", portalB),
			}
			a := &Iscsiadm{Exec: scripted(t, tc.steps), Devices: Devices{SysfsDir: sys, ByPathDir: t.TempDir()}}
			res, err := a.Login(context.Background(), LoginRequest{IQN: testIQN, Portals: tc.portals, CHAP: tc.chap})
			if tc.wantErr != 0 {
				require.Error(t, err)
				assert.True(t, IsExit(err, tc.wantErr), "error %v should carry exit %d", err, tc.wantErr)
				assert.NotContains(t, err.Error(), "chapsecret123")
			} else {
				require.NoError(t, err)
				assert.Equal(t, tc.loggedIn, res.LoggedIn)
			}
			for p, code := range tc.failed {
				assert.True(t, IsExit(res.Failed[p], code), "portal %s: %v", p, res.Failed[p])
			}
			for p, scan := range scans {
				b, err := os.ReadFile(scan)
				require.NoError(t, err)
				if slices.Contains(tc.wantScanOn, p) {
					assert.Equal(t, "0 0 0", string(b), "scan of %s", p)
				} else {
					assert.Empty(t, string(b), "no scan of %s", p)
				}
			}
		})
	}
}

func TestIscsiadmRedactsCHAPSecrets(t *testing.T) {
	steps := []step{
		{"iscsiadm -m session", outNoSessions, 21},
		{node(portalA, "-o new"), outNewNode(portalA), 0},
		{node(portalA, "-o update -n node.session.scan -v manual"), "", 0},
		{node(portalA, "-o update -n node.startup -v manual"), "", 0},
		{node(portalA, "-o update -n node.session.auth.authmethod -v CHAP"), "", 0},
		{node(portalA, "-o update -n node.session.auth.username -v chapuser"), "", 0},
		{node(portalA, "-o update -n node.session.auth.password -v chapsecret123"), "iscsiadm: database error\n", 6},
		{node(portalA, "-o delete"), "", 0},
	}
	a := &Iscsiadm{Exec: scripted(t, steps), Devices: Devices{SysfsDir: t.TempDir()}}
	_, err := a.Login(context.Background(), LoginRequest{IQN: testIQN, Portals: []string{portalA},
		CHAP: &SessionCHAP{Username: "chapuser", Password: "chapsecret123"}})
	require.Error(t, err)
	assert.True(t, IsExit(err, ExitIDBM))
	assert.NotContains(t, err.Error(), "chapsecret123")
	assert.Contains(t, err.Error(), "node.session.auth.password -v (redacted)")
	assert.Equal(t, []string{"-n", "node.session.auth.password_in", "-v", "(redacted)", "-v", "x"},
		redactArgs([]string{"-n", "node.session.auth.password_in", "-v", "s3cret", "-v", "x"})[0:6])
}

func TestIscsiadmLogout(t *testing.T) {
	tests := []struct {
		name    string
		steps   []step
		wantErr bool
	}{
		{"logged in", []step{
			{node(portalA, "--logout"), "Logging out of session [sid: 1, target: " + testIQN + ", portal: 192.0.2.1,3260]\n" +
				"Logout of [sid: 1, target: " + testIQN + ", portal: 192.0.2.1,3260] successful.\n", 0},
			{node(portalA, "-o delete"), "", 0},
		}, false},
		{"already gone: 21 on logout and delete", []step{
			{node(portalA, "--logout"), outNoMatching, 21},
			{node(portalA, "-o delete"), outNoRecords, 21},
		}, false},
		{"logout fails (10)", []step{
			{node(portalA, "--logout"), "iscsiadm: Could not logout of [sid: 1, target: " + testIQN + ", portal: 192.0.2.1,3260].\n", 10},
		}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a := &Iscsiadm{Exec: scripted(t, tc.steps), Devices: Devices{SysfsDir: t.TempDir(), ByPathDir: t.TempDir()}}
			err := a.Logout(context.Background(), LogoutRequest{IQN: testIQN, Portals: []string{portalA}})
			if tc.wantErr {
				require.Error(t, err)
				assert.Contains(t, err.Error(), "exit 10")
			} else {
				require.NoError(t, err)
			}
		})
	}
}

func TestParseSessions(t *testing.T) {
	out := "tcp: [1] 192.0.2.1:3260,1 " + testIQN + " (non-flash)\n" +
		"tcp: [12] [fd00::1]:3260,2 iqn.2001-05.com.doe:test (non-flash)\n" +
		"garbage line\n\n"
	assert.Equal(t, []Session{
		{Transport: "tcp", SID: 1, Portal: "192.0.2.1:3260", TPGT: 1, IQN: testIQN},
		{Transport: "tcp", SID: 12, Portal: "[fd00::1]:3260", TPGT: 2, IQN: "iqn.2001-05.com.doe:test"},
	}, ParseSessions(out))
	assert.Empty(t, ParseSessions(outNoSessions))
}

func TestValidateIQNAndPortal(t *testing.T) {
	for _, tc := range []struct {
		iqn string
		ok  bool
	}{
		{testIQN, true},
		{"iqn.1993-08.org.debian:01:abcdef", true},
		{"eui.0123456789ABCDEF", true},
		{"iqn.2013-05.com.x/../../etc", false},
		{"iqn.2013-05.com.x -o delete", false},
		{"iqn.13-05.com.x:y", false},
		{"naa.1234", false},
		{"-iqn.2013-05.com.x", false},
		{"", false},
	} {
		err := ValidateIQN(tc.iqn)
		assert.Equal(t, tc.ok, err == nil, "%q: %v", tc.iqn, err)
	}
	for _, tc := range []struct {
		in, want string
		ok       bool
	}{
		{"192.0.2.1:3260", "192.0.2.1:3260", true},
		{"[fd00::1]:3260", "[fd00::1]:3260", true},
		{"[::ffff:192.0.2.1]:3260", "192.0.2.1:3260", true},
		{"192.0.2.1", "", false},
		{"host.example:3260", "", false},
		{"192.0.2.1:0", "", false},
		{"192.0.2.1:3260/../x", "", false},
	} {
		got, err := ParsePortal(tc.in)
		assert.Equal(t, tc.ok, err == nil, "%q: %v", tc.in, err)
		assert.Equal(t, tc.want, got)
	}
	assert.Equal(t, "ip-fd00::1:3260-iscsi-"+testIQN+"-lun-0", ByPathName("[fd00::1]:3260", testIQN, 0))
	assert.Equal(t, "ip-192.0.2.1:3260-iscsi-"+testIQN+"-lun-0", ByPathName(portalA, testIQN, 0))
}
