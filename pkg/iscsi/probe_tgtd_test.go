package iscsi_test

import (
	"context"
	"errors"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/petfabric/petfabric/pkg/iscsi"
	"github.com/petfabric/petfabric/pkg/iscsi/probetest"
)

const (
	nodeA   = "iqn.2024-01.io.petfabric.test:node-a"
	nodeB   = "iqn.2024-01.io.petfabric.test:node-b"
	volA    = "iqn.2024-01.io.petfabric.test:vol-a"
	volB    = "iqn.2024-01.io.petfabric.test:vol-b"
	volOpen = "iqn.2024-01.io.petfabric.test:vol-open"
)

// TestProbeAgainstTGTD runs the probe against a real tgtd with ACLs by initiator name.
func TestProbeAgainstTGTD(t *testing.T) {
	tgt := probetest.Start(t)
	tgt.AddTarget(probetest.TargetOptions{IQN: volA, Initiators: []string{nodeA}})
	tgt.AddTarget(probetest.TargetOptions{IQN: volB, Initiators: []string{nodeB}})
	tgt.AddTarget(probetest.TargetOptions{IQN: volOpen})

	tests := []struct {
		name      string
		initiator string
		want      []string
		wantErr   error
		visible   []string
	}{
		{name: "node-a sees its target and the open one", initiator: nodeA, visible: []string{volA, volOpen}},
		{name: "node-b sees only its own", initiator: nodeB, visible: []string{volB, volOpen}},
		{name: "unknown initiator sees only the open target", initiator: "iqn.2024-01.io.petfabric.test:stranger", visible: []string{volOpen}},
		{name: "wanted target visible", initiator: nodeA, want: []string{volA}, visible: []string{volA, volOpen}},
		{name: "wanted target hidden by the ACL", initiator: nodeB, want: []string{volA}, wantErr: iscsi.ErrTargetNotVisible, visible: []string{volB, volOpen}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res, err := iscsi.Probe(context.Background(), tgt.Portal, iscsi.ProbeOptions{
				InitiatorName: tc.initiator, WantTargets: tc.want, Timeout: 5 * time.Second,
			})
			if tc.wantErr != nil {
				require.ErrorIs(t, err, tc.wantErr)
				var pe *iscsi.ProbeError
				require.ErrorAs(t, err, &pe)
				assert.Contains(t, pe.Reason(), tc.want[0])
			} else {
				require.NoError(t, err, "tgtd log:\n%s", tgt.Log())
			}
			require.NotNil(t, res)
			var names []string
			for _, tg := range res.Targets {
				names = append(names, tg.Name)
				require.Len(t, tg.Addresses, 1)
				assert.Equal(t, tgt.Portal, tg.Addresses[0].Address)
				assert.Equal(t, uint16(1), tg.Addresses[0].PortalGroupTag)
			}
			assert.ElementsMatch(t, tc.visible, names)
			assert.Positive(t, res.RTT)
			assert.LessOrEqual(t, res.RTT, res.Duration)
		})
	}
}

// TestProbeDiscoveryCHAPAgainstTGTD covers one-way and mutual discovery CHAP.
func TestProbeDiscoveryCHAPAgainstTGTD(t *testing.T) {
	tgt := probetest.Start(t)
	tgt.AddTarget(probetest.TargetOptions{IQN: volA, Initiators: []string{nodeA}})
	tgt.SetDiscoveryCHAP("disc-user", "disc-secret-0123", false)

	probe := func(c *iscsi.DiscoveryCHAP) error {
		_, err := iscsi.Probe(context.Background(), tgt.Portal, iscsi.ProbeOptions{
			InitiatorName: nodeA, CHAP: c, WantTargets: []string{volA}, Timeout: 5 * time.Second,
		})
		return err
	}
	t.Run("right secret", func(t *testing.T) {
		require.NoError(t, probe(&iscsi.DiscoveryCHAP{Username: "disc-user", Secret: "disc-secret-0123"}), tgt.Log())
	})
	t.Run("no credentials", func(t *testing.T) {
		err := probe(nil)
		require.ErrorIs(t, err, iscsi.ErrAuthFailed)
		t.Log(err)
	})
	t.Run("wrong secret", func(t *testing.T) {
		err := probe(&iscsi.DiscoveryCHAP{Username: "disc-user", Secret: "not-the-secret-99"})
		require.ErrorIs(t, err, iscsi.ErrAuthFailed)
		var pe *iscsi.ProbeError
		require.ErrorAs(t, err, &pe)
		assert.Equal(t, byte(2), pe.StatusClass)
		assert.Equal(t, byte(1), pe.StatusDetail)
		assert.NotContains(t, err.Error(), "not-the-secret-99", "secrets must never show in errors")
	})
	t.Run("unknown user", func(t *testing.T) {
		require.ErrorIs(t, probe(&iscsi.DiscoveryCHAP{Username: "nobody", Secret: "disc-secret-0123"}), iscsi.ErrAuthFailed)
	})

	tgt.SetDiscoveryCHAP("target-user", "target-secret-456", true)
	t.Run("mutual, right target secret", func(t *testing.T) {
		require.NoError(t, probe(&iscsi.DiscoveryCHAP{Username: "disc-user", Secret: "disc-secret-0123",
			TargetUsername: "target-user", TargetSecret: "target-secret-456"}), tgt.Log())
	})
	t.Run("mutual, wrong target secret", func(t *testing.T) {
		err := probe(&iscsi.DiscoveryCHAP{Username: "disc-user", Secret: "disc-secret-0123",
			TargetUsername: "target-user", TargetSecret: "impostor-secret-7"})
		require.ErrorIs(t, err, iscsi.ErrAuthFailed)
		assert.Contains(t, err.Error(), "does not match")
		assert.NotContains(t, err.Error(), "impostor-secret-7")
	})
	t.Run("mutual, wrong target name", func(t *testing.T) {
		err := probe(&iscsi.DiscoveryCHAP{Username: "disc-user", Secret: "disc-secret-0123",
			TargetUsername: "someone-else", TargetSecret: "target-secret-456"})
		require.ErrorIs(t, err, iscsi.ErrAuthFailed)
	})
}

// TestProbeLoginRejectedAgainstTGTD: an offline tgtd answers Login with a target error.
func TestProbeLoginRejectedAgainstTGTD(t *testing.T) {
	tgt := probetest.Start(t)
	tgt.AddTarget(probetest.TargetOptions{IQN: volA, Initiators: []string{nodeA}})
	tgt.SetState("offline")
	_, err := iscsi.Probe(context.Background(), tgt.Portal, iscsi.ProbeOptions{InitiatorName: nodeA, Timeout: 5 * time.Second})
	require.ErrorIs(t, err, iscsi.ErrLoginRejected)
	t.Log(err)
	var pe *iscsi.ProbeError
	require.ErrorAs(t, err, &pe)
	assert.Equal(t, "login", pe.Step)

	tgt.SetState("ready")
	_, err = iscsi.Probe(context.Background(), tgt.Portal, iscsi.ProbeOptions{InitiatorName: nodeA, Timeout: 5 * time.Second})
	require.NoError(t, err)
}

func TestProbeNetworkFailures(t *testing.T) {
	// A port nobody listens on: grab a free one and close it.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	closed := l.Addr().String()
	require.NoError(t, l.Close())

	// A listener that accepts and then never says a word: the target hangs mid-login.
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { _ = silent.Close() })
	go func() {
		for {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { _ = c.Close() })
		}
	}()

	t.Run("connection refused", func(t *testing.T) {
		_, err := iscsi.Probe(context.Background(), closed, iscsi.ProbeOptions{InitiatorName: nodeA})
		require.ErrorIs(t, err, iscsi.ErrConnRefused)
		require.ErrorIs(t, err, syscall.ECONNREFUSED)
		var pe *iscsi.ProbeError
		require.ErrorAs(t, err, &pe)
		assert.Equal(t, "connection refused", pe.Reason())
		assert.Equal(t, "connect", pe.Step)
	})
	t.Run("silent target times out", func(t *testing.T) {
		start := time.Now()
		_, err := iscsi.Probe(context.Background(), silent.Addr().String(), iscsi.ProbeOptions{InitiatorName: nodeA, Timeout: 300 * time.Millisecond})
		require.ErrorIs(t, err, iscsi.ErrTimeout)
		assert.Less(t, time.Since(start), 3*time.Second)
		var pe *iscsi.ProbeError
		require.ErrorAs(t, err, &pe)
		assert.Equal(t, "login", pe.Step)
	})
	t.Run("cancelled context", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		time.AfterFunc(100*time.Millisecond, cancel)
		_, err := iscsi.Probe(ctx, silent.Addr().String(), iscsi.ProbeOptions{InitiatorName: nodeA, Timeout: time.Minute})
		require.ErrorIs(t, err, iscsi.ErrTimeout)
	})
	t.Run("dial error is unreachable", func(t *testing.T) {
		_, err := iscsi.Probe(context.Background(), "127.0.0.1:3260", iscsi.ProbeOptions{InitiatorName: nodeA,
			DialContext: func(context.Context, string, string) (net.Conn, error) {
				return nil, &net.OpError{Op: "dial", Net: "tcp", Err: syscall.EHOSTUNREACH}
			}})
		require.ErrorIs(t, err, iscsi.ErrUnreachable)
		assert.False(t, errors.Is(err, iscsi.ErrTimeout))
	})
	t.Run("bad initiator name", func(t *testing.T) {
		_, err := iscsi.Probe(context.Background(), closed, iscsi.ProbeOptions{InitiatorName: "node-a"})
		require.ErrorIs(t, err, iscsi.ErrLoginRejected)
		assert.Contains(t, err.Error(), "invalid initiator name")
	})
}
