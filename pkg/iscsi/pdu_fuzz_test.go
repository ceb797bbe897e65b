package iscsi

import (
	"bytes"
	"testing"
)

// The probe reads PDUs from whatever answers on a portal address, so the parser must never
// panic, never allocate more than its limit and never accept an inconsistent PDU.

func FuzzReadPDU(f *testing.F) {
	ok := &pdu{data: encodeText([]textKV{{"TargetName", "iqn.a"}, {"TargetAddress", "10.0.0.1:3260,1"}})}
	ok.bhs[0] = opTextResp
	ok.bhs[1] = flagFinal
	f.Add(ok.marshal())
	withAHS := &pdu{ahs: make([]byte, 8), data: []byte("A=1\x00")}
	f.Add(withAHS.marshal())
	f.Add(make([]byte, bhsLen))
	f.Add([]byte{0x23, 0x80, 0, 0, 0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := readPDU(bytes.NewReader(b), maxDataSegment)
		if err != nil {
			return
		}
		if len(p.data) > maxDataSegment {
			t.Fatalf("accepted a %d-byte data segment over the %d limit", len(p.data), maxDataSegment)
		}
		if len(p.ahs) != int(b[4])*4 {
			t.Fatalf("AHS length %d, header says %d words", len(p.ahs), b[4])
		}
		// What was read re-encodes to the bytes consumed (modulo padding content).
		again := p.marshal()
		if !bytes.Equal(again[:bhsLen+len(p.ahs)+len(p.data)], b[:bhsLen+len(p.ahs)+len(p.data)]) {
			t.Fatalf("re-encoded PDU differs from input")
		}
		// Whatever the data says, the text and SendTargets parsers must cope.
		pairs, err := parseText(p.data)
		if err != nil {
			return
		}
		_, _ = parseSendTargets(pairs)
	})
}

func FuzzParseText(f *testing.F) {
	f.Add([]byte("SendTargets=All\x00"))
	f.Add([]byte("TargetName=iqn.a\x00TargetAddress=[fd00::1]:3260,1\x00\x00"))
	f.Add([]byte("CHAP_A=5\x00CHAP_I=1\x00CHAP_C=0x0102\x00"))
	f.Add([]byte("=\x00"))
	f.Fuzz(func(t *testing.T, b []byte) {
		pairs, err := parseText(b)
		if err != nil {
			return
		}
		for _, p := range pairs {
			if p.Key == "" || len(p.Key) > maxKeyLen || len(p.Value) > maxValueLen {
				t.Fatalf("accepted invalid pair %q", p)
			}
		}
		// Round trip: encoding what was parsed and parsing it again is stable.
		again, err := parseText(encodeText(pairs))
		if err != nil {
			t.Fatalf("re-parse of encoded pairs: %v", err)
		}
		if len(again) != len(pairs) {
			t.Fatalf("round trip changed %d pairs into %d", len(pairs), len(again))
		}
		for i := range pairs {
			if pairs[i] != again[i] {
				t.Fatalf("round trip changed %q into %q", pairs[i], again[i])
			}
		}
		targets, err := parseSendTargets(pairs)
		if err != nil {
			return
		}
		for _, tg := range targets {
			if tg.Name == "" {
				t.Fatalf("accepted a target without a name")
			}
		}
	})
}

func FuzzCHAPAnswer(f *testing.F) {
	f.Add("5", "1", "0x0102030405060708")
	f.Add("5", "255", "0bAQIDBA==")
	f.Add("7", "1", "0x01")
	f.Add("5", "-1", "0x")
	f.Fuzz(func(t *testing.T, alg, id, challenge string) {
		st := &chapState{creds: &DiscoveryCHAP{Username: "u", Secret: "s", TargetUsername: "t", TargetSecret: "x"}}
		out, err := st.answer(map[string]string{"CHAP_A": alg, "CHAP_I": id, "CHAP_C": challenge})
		if err != nil {
			return
		}
		if len(out) != 4 || out[0].Key != "CHAP_N" || out[1].Key != "CHAP_R" {
			t.Fatalf("unexpected answer %q", out)
		}
	})
}
