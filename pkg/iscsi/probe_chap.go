package iscsi

import (
	"crypto/md5" //nolint:gosec // CHAP_A=5 is MD5 by definition (RFC 1994, RFC 7143 §12.1.3); tgtd and Datera offer nothing else.
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
)

// DiscoveryCHAP holds discovery-session CHAP credentials. Secrets never appear in errors or logs.
type DiscoveryCHAP struct {
	// Username and Secret authenticate this initiator to the target (CHAP_N / CHAP_R).
	Username string
	Secret   string
	// TargetUsername and TargetSecret, when both set, make the authentication mutual: the
	// probe challenges the target and accepts only this name and secret in its answer.
	TargetUsername string
	TargetSecret   string
}

func (c *DiscoveryCHAP) mutual() bool {
	return c != nil && c.TargetUsername != "" && c.TargetSecret != ""
}

func (c *DiscoveryCHAP) validate() error {
	if c.Username == "" || c.Secret == "" {
		return fmt.Errorf("CHAP needs both a username and a secret")
	}
	if (c.TargetUsername == "") != (c.TargetSecret == "") {
		return fmt.Errorf("mutual CHAP needs both the target username and the target secret")
	}
	if c.mutual() && c.TargetSecret == c.Secret {
		// RFC 7143 §12.1.3: the target must refuse identical secrets in both directions,
		// so catch it here with a clearer message.
		return fmt.Errorf("mutual CHAP: the target secret must differ from the initiator secret")
	}
	return nil
}

// chapMD5 is the CHAP response: MD5(identifier || secret || challenge) (RFC 1994 §4.1).
func chapMD5(id byte, secret string, challenge []byte) []byte {
	h := md5.New() //nolint:gosec // see import comment
	h.Write([]byte{id})
	h.Write([]byte(secret))
	h.Write(challenge)
	return h.Sum(nil)
}

// decodeBinary decodes an iSCSI binary value: "0x" + hex or "0b" + base64 (RFC 7143 §6.1).
func decodeBinary(v string) ([]byte, error) {
	switch {
	case len(v) > 2 && (v[:2] == "0x" || v[:2] == "0X"):
		h := v[2:]
		if len(h)%2 == 1 {
			h = "0" + h // an odd number of digits has an implied leading zero
		}
		b, err := hex.DecodeString(h)
		if err != nil {
			return nil, fmt.Errorf("bad hex value: %w", err)
		}
		return b, nil
	case len(v) > 2 && (v[:2] == "0b" || v[:2] == "0B"):
		b, err := base64.StdEncoding.DecodeString(v[2:])
		if err != nil {
			return nil, fmt.Errorf("bad base64 value: %w", err)
		}
		return b, nil
	}
	return nil, fmt.Errorf("binary value %q lacks a 0x or 0b prefix", clipForError([]byte(v)))
}

func encodeHex(b []byte) string { return "0x" + hex.EncodeToString(b) }

// chapState runs the initiator side of a CHAP exchange during the security stage.
type chapState struct {
	creds *DiscoveryCHAP
	// For mutual CHAP: the identifier and challenge this probe sent the target.
	myID        byte
	myChallenge []byte
}

// answer builds CHAP_N/CHAP_R (and, for mutual CHAP, CHAP_I/CHAP_C) from the target's
// CHAP_A/CHAP_I/CHAP_C.
func (s *chapState) answer(keys map[string]string) ([]textKV, error) {
	if a := keys["CHAP_A"]; a != "5" {
		return nil, fmt.Errorf("target chose CHAP algorithm %q, only 5 (MD5) is supported", a)
	}
	idv, ok := keys["CHAP_I"]
	if !ok {
		return nil, fmt.Errorf("target sent no CHAP_I")
	}
	id, err := strconv.ParseUint(idv, 0, 8)
	if err != nil {
		return nil, fmt.Errorf("bad CHAP_I %q: %w", clipForError([]byte(idv)), err)
	}
	cv, ok := keys["CHAP_C"]
	if !ok {
		return nil, fmt.Errorf("target sent no CHAP_C")
	}
	challenge, err := decodeBinary(cv)
	if err != nil {
		return nil, fmt.Errorf("CHAP_C: %w", err)
	}
	if len(challenge) == 0 {
		return nil, fmt.Errorf("empty CHAP_C")
	}
	out := []textKV{
		{"CHAP_N", s.creds.Username},
		{"CHAP_R", encodeHex(chapMD5(byte(id), s.creds.Secret, challenge))},
	}
	if s.creds.mutual() {
		var rnd [17]byte
		if _, err := rand.Read(rnd[:]); err != nil {
			return nil, fmt.Errorf("mutual CHAP challenge: %w", err)
		}
		s.myID = rnd[0]
		s.myChallenge = rnd[1:]
		out = append(out, textKV{"CHAP_I", strconv.Itoa(int(s.myID))}, textKV{"CHAP_C", encodeHex(s.myChallenge)})
	}
	return out, nil
}

// verifyTarget checks the target's answer to a mutual CHAP challenge.
func (s *chapState) verifyTarget(keys map[string]string) error {
	if !s.creds.mutual() {
		return nil
	}
	name, ok := keys["CHAP_N"]
	if !ok {
		return fmt.Errorf("mutual CHAP: target did not answer the challenge (no CHAP_N)")
	}
	if name != s.creds.TargetUsername {
		return fmt.Errorf("mutual CHAP: target answered as %q, want %q", name, s.creds.TargetUsername)
	}
	rv, ok := keys["CHAP_R"]
	if !ok {
		return fmt.Errorf("mutual CHAP: target sent no CHAP_R")
	}
	got, err := decodeBinary(rv)
	if err != nil {
		return fmt.Errorf("mutual CHAP: CHAP_R: %w", err)
	}
	want := chapMD5(s.myID, s.creds.TargetSecret, s.myChallenge)
	if subtle.ConstantTimeCompare(got, want) != 1 {
		return fmt.Errorf("mutual CHAP: target's response does not match the configured target secret")
	}
	return nil
}

// offerAuthMethods is the AuthMethod value the probe offers. Like open-iscsi it also
// offers None next to CHAP, so a target that does not require discovery CHAP still
// answers; with mutual CHAP it insists on CHAP, because the point of mutual CHAP is that
// the target proves who it is.
func offerAuthMethods(c *DiscoveryCHAP) string {
	switch {
	case c == nil:
		return "None"
	case c.mutual():
		return "CHAP"
	}
	return strings.Join([]string{"CHAP", "None"}, ",")
}
