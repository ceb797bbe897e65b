package iscsi

import (
	"context"
	"encoding/binary"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// scriptTarget is a minimal in-process iSCSI target for protocol corner cases that tgtd
// never produces (continuations, pings, rejects, malformed answers). Its default
// behaviour is a correct discovery target; each test replaces answers through respond.
type scriptTarget struct {
	targetsText []byte
	// respond returns the PDUs to answer req with; nil means the default answer.
	respond func(req *pdu, def []*pdu) []*pdu
	statSN  uint32
	got     []*pdu
}

func (st *scriptTarget) serve(t *testing.T, c net.Conn) {
	defer func() { _ = c.Close() }()
	for {
		req, err := readPDU(c, 1<<20)
		if err != nil {
			return
		}
		st.got = append(st.got, req)
		def := st.defaultAnswer(req)
		out := def
		if st.respond != nil {
			if o := st.respond(req, def); o != nil {
				out = o
			}
		}
		for _, p := range out {
			if _, err := c.Write(p.marshal()); err != nil {
				return
			}
		}
		if req.opcode() == opLogoutReq {
			return
		}
	}
}

func (st *scriptTarget) resp(op byte, req *pdu, flags byte, data []byte) *pdu {
	p := &pdu{data: data}
	p.bhs[0] = op
	p.bhs[1] = flags
	copy(p.bhs[8:16], req.bhs[8:16])
	copy(p.bhs[16:20], req.bhs[16:20])
	binary.BigEndian.PutUint32(p.bhs[20:24], reservedTag)
	binary.BigEndian.PutUint32(p.bhs[24:28], st.statSN)
	st.statSN++
	return p
}

func (st *scriptTarget) defaultAnswer(req *pdu) []*pdu {
	switch req.opcode() {
	case opLoginReq:
		flags := req.flags()
		// Echo T/CSG/NSG: agree to every transition the initiator asks for.
		return []*pdu{st.resp(opLoginResp, req, flags&^flagContinue, encodeText([]textKV{{"AuthMethod", "None"}}))}
	case opTextReq:
		return []*pdu{st.resp(opTextResp, req, flagFinal, st.targetsText)}
	case opLogoutReq:
		return []*pdu{st.resp(opLogoutResp, req, flagFinal, nil)}
	}
	return nil
}

func runScript(t *testing.T, st *scriptTarget, opts ProbeOptions) (*ProbeResult, error) {
	t.Helper()
	// A real loopback socket, not net.Pipe: TCP buffering lets the target send a ping and
	// an answer back to back, as real targets do.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer func() { _ = l.Close() }()
	done := make(chan struct{})
	go func() {
		defer close(done)
		c, err := l.Accept()
		if err != nil {
			return
		}
		st.serve(t, c)
	}()
	if opts.InitiatorName == "" {
		opts.InitiatorName = "iqn.2024-01.io.petfabric.test:script"
	}
	if opts.Timeout == 0 {
		opts.Timeout = 2 * time.Second
	}
	res, err := Probe(context.Background(), l.Addr().String(), opts)
	<-done
	return res, err
}

var twoTargets = encodeText([]textKV{
	{"TargetName", "iqn.2024-01.test:a"}, {"TargetAddress", "10.1.1.5:3260,1"}, {"TargetAddress", "[fd00::5]:3260,2"},
	{"TargetName", "iqn.2024-01.test:b"},
})

func TestProbeProtocol(t *testing.T) {
	loginStatus := func(class, detail byte, data []byte) func(req *pdu, def []*pdu) []*pdu {
		return func(req *pdu, def []*pdu) []*pdu {
			if req.opcode() == opLoginReq {
				def[0].bhs[36], def[0].bhs[37] = class, detail
				def[0].data = data
			}
			return def
		}
	}
	tests := []struct {
		name    string
		respond func(req *pdu, def []*pdu) []*pdu
		wantErr error
		errText string
		check   func(t *testing.T, st *scriptTarget, res *ProbeResult)
	}{
		{
			name: "plain discovery",
			check: func(t *testing.T, st *scriptTarget, res *ProbeResult) {
				require.Len(t, res.Targets, 2)
				assert.Equal(t, []DiscoveredPortal{{"10.1.1.5:3260", 1}, {"[fd00::5]:3260", 2}}, res.Targets[0].Addresses)
				assert.Empty(t, res.Targets[1].Addresses)
				// Security → operational → full feature, then SendTargets and Logout.
				require.Len(t, st.got, 4)
				first, err := parseText(st.got[0].data)
				require.NoError(t, err)
				assert.Contains(t, first, textKV{"SessionType", "Discovery"})
				assert.Contains(t, first, textKV{"AuthMethod", "None"})
				assert.Equal(t, byte(flagTransit|stageSecurity<<2|stageOperational), st.got[0].flags())
				assert.Equal(t, byte(flagTransit|stageOperational<<2|stageFullFeature), st.got[1].flags())
				assert.Equal(t, byte(opTextReq), st.got[2].bhs[0], "SendTargets is a non-immediate command")
				// The first command after login carries the login's CmdSN; logout the next.
				assert.Equal(t, binary.BigEndian.Uint32(st.got[0].bhs[24:28]), binary.BigEndian.Uint32(st.got[2].bhs[24:28]))
				assert.Equal(t, binary.BigEndian.Uint32(st.got[2].bhs[24:28])+1, binary.BigEndian.Uint32(st.got[3].bhs[24:28]))
				assert.Equal(t, byte(opLogoutReq|flagImmediate), st.got[3].bhs[0])
			},
		},
		{
			name: "SendTargets answer split over continued PDUs",
			respond: func() func(req *pdu, def []*pdu) []*pdu {
				part := 0
				return func(req *pdu, def []*pdu) []*pdu {
					if req.opcode() != opTextReq {
						return nil
					}
					part++
					half := len(twoTargets) / 2
					if part == 1 {
						// First half, cut inside a key=value pair: C bit, no F bit, a TTT.
						def[0].data = twoTargets[:half]
						def[0].bhs[1] = flagContinue
						binary.BigEndian.PutUint32(def[0].bhs[20:24], 0x1234)
						return def
					}
					def[0].data = twoTargets[half:]
					return def
				}
			}(),
			check: func(t *testing.T, st *scriptTarget, res *ProbeResult) {
				require.Len(t, res.Targets, 2)
				// The second Text request continues the first: same ITT, the target's TTT.
				var texts []*pdu
				for _, p := range st.got {
					if p.opcode() == opTextReq {
						texts = append(texts, p)
					}
				}
				require.Len(t, texts, 2)
				assert.Equal(t, texts[0].itt(), texts[1].itt())
				assert.Equal(t, uint32(0x1234), texts[1].ttt())
				assert.Empty(t, texts[1].data)
				assert.Equal(t, binary.BigEndian.Uint32(texts[0].bhs[24:28])+1, binary.BigEndian.Uint32(texts[1].bhs[24:28]))
			},
		},
		{
			name: "target ping answered before the SendTargets reply",
			respond: func(req *pdu, def []*pdu) []*pdu {
				if req.opcode() != opTextReq {
					return nil
				}
				ping := &pdu{}
				ping.bhs[0] = opNopIn
				ping.bhs[1] = flagFinal
				binary.BigEndian.PutUint32(ping.bhs[16:20], reservedTag)
				binary.BigEndian.PutUint32(ping.bhs[20:24], 0x77)
				return append([]*pdu{ping}, def...)
			},
			check: func(t *testing.T, st *scriptTarget, res *ProbeResult) {
				require.Len(t, res.Targets, 2)
				var nop *pdu
				for _, p := range st.got {
					if p.opcode() == opNopOut {
						nop = p
					}
				}
				require.NotNil(t, nop, "the probe must answer a NOP-In that carries a TTT")
				assert.Equal(t, uint32(0x77), nop.ttt())
			},
		},
		{name: "service unavailable", respond: loginStatus(3, 1, nil), wantErr: ErrLoginRejected, errText: "service unavailable (status 0x0301)"},
		{name: "authorization failure", respond: loginStatus(2, 2, nil), wantErr: ErrLoginRejected, errText: "authorization failure"},
		{name: "authentication failure", respond: loginStatus(2, 1, nil), wantErr: ErrAuthFailed},
		{
			name:    "redirect names the new address",
			respond: loginStatus(1, 1, encodeText([]textKV{{"TargetAddress", "10.9.9.9:3260,1"}})),
			wantErr: ErrLoginRejected, errText: "target moved temporarily (status 0x0101) to 10.9.9.9:3260,1",
		},
		{
			name: "target demands CHAP we do not have",
			respond: func(req *pdu, def []*pdu) []*pdu {
				if req.opcode() == opLoginReq {
					def[0].data = encodeText([]textKV{{"AuthMethod", "Reject"}})
				}
				return def
			},
			wantErr: ErrAuthFailed, errText: "configure discovery CHAP",
		},
		{
			name: "reject PDU",
			respond: func(req *pdu, def []*pdu) []*pdu {
				if req.opcode() != opTextReq {
					return nil
				}
				r := &pdu{}
				r.bhs[0] = opReject
				r.bhs[1] = flagFinal
				r.bhs[2] = 0x04
				return []*pdu{r}
			},
			wantErr: ErrProtocol, errText: "protocol error (reason 0x04)",
		},
		{
			name: "response for another task",
			respond: func(req *pdu, def []*pdu) []*pdu {
				if req.opcode() == opTextReq {
					binary.BigEndian.PutUint32(def[0].bhs[16:20], 0xdead)
				}
				return def
			},
			wantErr: ErrProtocol, errText: "does not match request ITT",
		},
		{
			name: "malformed SendTargets text",
			respond: func(req *pdu, def []*pdu) []*pdu {
				if req.opcode() == opTextReq {
					def[0].data = []byte("TargetAddress=10.0.0.1:3260,1\x00")
				}
				return def
			},
			wantErr: ErrProtocol, errText: "before any TargetName",
		},
		{
			name: "oversized data segment",
			respond: func(req *pdu, def []*pdu) []*pdu {
				if req.opcode() == opTextReq {
					def[0].data = make([]byte, maxDataSegment+1)
				}
				return def
			},
			wantErr: ErrProtocol, errText: "limit 65536",
		},
		{
			name: "failed logout",
			respond: func(req *pdu, def []*pdu) []*pdu {
				if req.opcode() == opLogoutReq {
					def[0].bhs[2] = 3
				}
				return def
			},
			wantErr: ErrProtocol, errText: "cleanup failed",
		},
		{
			name: "target skips back a stage",
			respond: func(req *pdu, def []*pdu) []*pdu {
				if req.opcode() == opLoginReq && req.flags()>>2&3 == stageOperational {
					def[0].bhs[1] = flagTransit | stageOperational<<2 | stageSecurity
				}
				return def
			},
			wantErr: ErrProtocol, errText: "invalid stage",
		},
		{
			name: "unexpected opcode",
			respond: func(req *pdu, def []*pdu) []*pdu {
				if req.opcode() == opTextReq {
					def[0].bhs[0] = opLogoutResp
				}
				return def
			},
			wantErr: ErrProtocol, errText: "unexpected PDU opcode 0x26",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			st := &scriptTarget{targetsText: twoTargets, respond: tc.respond}
			res, err := runScript(t, st, ProbeOptions{})
			if tc.wantErr != nil {
				require.ErrorIs(t, err, tc.wantErr)
				assert.Contains(t, err.Error(), tc.errText)
				return
			}
			require.NoError(t, err)
			tc.check(t, st, res)
		})
	}
}

func TestProbeCHAPScript(t *testing.T) {
	// A target that runs the CHAP exchange by the book and checks the response.
	const secret = "script-secret-123"
	var challenge = []byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}
	step := 0
	st := &scriptTarget{targetsText: twoTargets}
	st.respond = func(req *pdu, def []*pdu) []*pdu {
		if req.opcode() != opLoginReq || req.flags()>>2&3 != stageSecurity {
			return nil
		}
		keys, err := parseText(req.data)
		require.NoError(t, err)
		m := map[string]string{}
		for _, k := range keys {
			m[k.Key] = k.Value
		}
		step++
		switch step {
		case 1:
			assert.Equal(t, "CHAP,None", m["AuthMethod"])
			assert.Zero(t, req.flags()&flagTransit, "no transit before authentication")
			def[0].data = encodeText([]textKV{{"AuthMethod", "CHAP"}})
		case 2:
			assert.Equal(t, "5", m["CHAP_A"])
			def[0].data = encodeText([]textKV{{"CHAP_A", "5"}, {"CHAP_I", "42"}, {"CHAP_C", "0b" + "AQIDBAUGBwgJCgsMDQ4PEA=="}})
		case 3:
			assert.Equal(t, "user", m["CHAP_N"])
			assert.Equal(t, encodeHex(chapMD5(42, secret, challenge)), m["CHAP_R"])
			def[0].data = nil
		}
		def[0].bhs[1] = req.flags()
		return def
	}
	res, err := runScript(t, st, ProbeOptions{CHAP: &DiscoveryCHAP{Username: "user", Secret: secret}})
	require.NoError(t, err)
	assert.Len(t, res.Targets, 2)
	assert.Equal(t, 3, step)
}

func TestCHAPValidate(t *testing.T) {
	for _, c := range []struct {
		chap DiscoveryCHAP
		err  string
	}{
		{DiscoveryCHAP{Username: "u"}, "both a username and a secret"},
		{DiscoveryCHAP{Username: "u", Secret: "s", TargetUsername: "t"}, "both the target username"},
		{DiscoveryCHAP{Username: "u", Secret: "s", TargetUsername: "t", TargetSecret: "s"}, "must differ"},
	} {
		_, err := Probe(context.Background(), "127.0.0.1:1", ProbeOptions{InitiatorName: "iqn.2024-01.x:y", CHAP: &c.chap})
		require.ErrorIs(t, err, ErrAuthFailed)
		assert.Contains(t, err.Error(), c.err)
	}
}

func TestWithDefaultPort(t *testing.T) {
	for in, want := range map[string]string{
		"10.1.1.5":       "10.1.1.5:3260",
		"10.1.1.5:3261":  "10.1.1.5:3261",
		"[fd00::1]":      "[fd00::1]:3260",
		"[fd00::1]:3262": "[fd00::1]:3262",
		"portal.example": "portal.example:3260",
	} {
		assert.Equal(t, want, withDefaultPort(in), in)
	}
	assert.True(t, strings.HasPrefix(withDefaultPort("fd00::1"), "[fd00::1]"))
}
