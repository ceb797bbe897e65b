package iscsi

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// This file holds the iSCSI wire format the discovery probe needs (RFC 7143 §11): the
// 48-byte Basic Header Segment, text key=value data segments, and the SendTargets answer.
// Everything here parses bytes that come from the network, so it validates every length
// before it trusts it and is covered by fuzz tests (pdu_fuzz_test.go).

// Opcodes (RFC 7143 §11.1.1). Initiator opcodes are 0x00-0x1f, target opcodes 0x20-0x3f.
const (
	opNopOut     = 0x00
	opLoginReq   = 0x03
	opTextReq    = 0x04
	opLogoutReq  = 0x06
	opNopIn      = 0x20
	opLoginResp  = 0x23
	opTextResp   = 0x24
	opLogoutResp = 0x26
	opAsyncMsg   = 0x32
	opReject     = 0x3f
)

const (
	bhsLen = 48
	// flagImmediate is the I bit in byte 0 of initiator PDUs.
	flagImmediate = 0x40
	// flagFinal is the F bit (Text, Logout, NOP) and flagTransit the T bit (Login) in byte 1.
	flagFinal   = 0x80
	flagTransit = 0x80
	// flagContinue is the C bit (Login, Text) in byte 1: more data for this key=value
	// sequence follows in the next PDU.
	flagContinue = 0x40
	// reservedTag is the "no tag" value of the Target Transfer Tag and ITT.
	reservedTag = 0xffffffff
	// maxDataSegment bounds a single data segment. The length field has 24 bits (16 MiB);
	// a discovery session never needs more than the MaxRecvDataSegmentLength the probe
	// declares, so anything larger is treated as a protocol violation instead of an
	// allocation request from the network.
	maxDataSegment = 1 << 16
)

// Login stages (CSG / NSG, RFC 7143 §11.12.3).
const (
	stageSecurity    = 0
	stageOperational = 1
	stageFullFeature = 3
)

// pdu is one iSCSI protocol data unit without digests (the probe negotiates
// HeaderDigest=None and DataDigest=None, and login PDUs never carry digests).
type pdu struct {
	bhs  [bhsLen]byte
	ahs  []byte
	data []byte
}

func (p *pdu) opcode() byte { return p.bhs[0] & 0x3f }
func (p *pdu) flags() byte  { return p.bhs[1] }
func (p *pdu) itt() uint32  { return binary.BigEndian.Uint32(p.bhs[16:20]) }
func (p *pdu) ttt() uint32  { return binary.BigEndian.Uint32(p.bhs[20:24]) }

// statSN sits at the same offset in every target response PDU
// the probe reads (Login, Text, Logout, NOP-In, Reject).
func (p *pdu) statSN() uint32 { return binary.BigEndian.Uint32(p.bhs[24:28]) }

// readPDU reads exactly one PDU. maxData bounds the data segment length it accepts.
func readPDU(r io.Reader, maxData int) (*pdu, error) {
	p := &pdu{}
	if _, err := io.ReadFull(r, p.bhs[:]); err != nil {
		return nil, fmt.Errorf("read PDU header: %w", err)
	}
	ahsLen := int(p.bhs[4]) * 4
	dataLen := int(p.bhs[5])<<16 | int(p.bhs[6])<<8 | int(p.bhs[7])
	if dataLen > maxData {
		return nil, fmt.Errorf("%w: PDU opcode 0x%02x announces a %d-byte data segment, limit %d",
			errMalformed, p.opcode(), dataLen, maxData)
	}
	if ahsLen > 0 {
		p.ahs = make([]byte, ahsLen)
		if _, err := io.ReadFull(r, p.ahs); err != nil {
			return nil, fmt.Errorf("read PDU additional header: %w", err)
		}
	}
	if dataLen > 0 {
		// The data segment is padded to a multiple of 4 bytes; the padding is not part of
		// the length field.
		padded := (dataLen + 3) &^ 3
		buf := make([]byte, padded)
		if _, err := io.ReadFull(r, buf); err != nil {
			return nil, fmt.Errorf("read PDU data segment: %w", err)
		}
		p.data = buf[:dataLen]
	}
	return p, nil
}

// marshal encodes the PDU, filling in the length fields and the data padding.
func (p *pdu) marshal() []byte {
	if len(p.ahs)%4 != 0 || len(p.ahs) > 255*4 || len(p.data) >= 1<<24 {
		// Only this package builds outgoing PDUs; a bad length is a programming error.
		panic(fmt.Sprintf("iscsi: invalid outgoing PDU lengths ahs=%d data=%d", len(p.ahs), len(p.data)))
	}
	padded := (len(p.data) + 3) &^ 3
	out := make([]byte, bhsLen+len(p.ahs)+padded)
	copy(out, p.bhs[:])
	out[4] = byte(len(p.ahs) / 4)
	out[5] = byte(len(p.data) >> 16)
	out[6] = byte(len(p.data) >> 8)
	out[7] = byte(len(p.data))
	copy(out[bhsLen:], p.ahs)
	copy(out[bhsLen+len(p.ahs):], p.data)
	return out
}

var errMalformed = errors.New("malformed iSCSI PDU")

// kv is one text key=value pair. Order matters to iSCSI (a TargetAddress belongs to the
// TargetName before it), so text data is kept as a list, not a map.
type textKV struct {
	Key, Value string
}

// Limits from RFC 7143 §6.1: key names are at most 63 bytes; values at most 8192
// bytes (the largest any standard key allows, e.g. CHAP_C).
const (
	maxKeyLen   = 63
	maxValueLen = 8192
)

// parseText parses a text data segment: a sequence of key=value pairs, each terminated by
// a NUL byte. It rejects pairs without '=', empty or over-long keys and over-long values.
// A final pair without a NUL terminator is an error: callers join continued (C bit) PDUs
// before parsing, so a complete segment always ends in NUL.
func parseText(data []byte) ([]textKV, error) {
	var out []textKV
	for len(data) > 0 {
		end := bytes.IndexByte(data, 0)
		if end < 0 {
			return nil, fmt.Errorf("%w: text pair %q is not NUL-terminated", errMalformed, clipForError(data))
		}
		pair := data[:end]
		data = data[end+1:]
		if len(pair) == 0 {
			// Some targets pad with extra NULs; an empty pair carries nothing.
			continue
		}
		eq := bytes.IndexByte(pair, '=')
		if eq <= 0 {
			return nil, fmt.Errorf("%w: text pair %q has no key=value form", errMalformed, clipForError(pair))
		}
		if eq > maxKeyLen {
			return nil, fmt.Errorf("%w: text key %q longer than %d bytes", errMalformed, clipForError(pair[:eq]), maxKeyLen)
		}
		if len(pair)-eq-1 > maxValueLen {
			return nil, fmt.Errorf("%w: value of text key %q longer than %d bytes", errMalformed, pair[:eq], maxValueLen)
		}
		out = append(out, textKV{Key: string(pair[:eq]), Value: string(pair[eq+1:])})
	}
	return out, nil
}

// encodeText is the inverse of parseText.
func encodeText(pairs []textKV) []byte {
	var b bytes.Buffer
	for _, p := range pairs {
		b.WriteString(p.Key)
		b.WriteByte('=')
		b.WriteString(p.Value)
		b.WriteByte(0)
	}
	return b.Bytes()
}

func clipForError(b []byte) string {
	const n = 64
	if len(b) > n {
		return string(b[:n]) + "..."
	}
	return string(b)
}

// DiscoveredTarget is one target a SendTargets discovery returned.
type DiscoveredTarget struct {
	// Name is the target's iSCSI name (iqn./eui./naa.).
	Name string
	// Addresses are the portals the target announced, in announcement order. An empty list
	// means "the portal this discovery session used" (RFC 7143 §13.1 / Appendix C).
	Addresses []DiscoveredPortal
}

// DiscoveredPortal is one TargetAddress value: "<domainname>[:<port>],<portal group tag>".
type DiscoveredPortal struct {
	// Address is host:port (an IPv6 host keeps its brackets, as sent on the wire).
	Address string
	// PortalGroupTag is the target portal group tag.
	PortalGroupTag uint16
}

// parseSendTargets turns the key=value list of a SendTargets response into targets.
// Keys other than TargetName and TargetAddress are ignored (targets may add TargetAlias).
func parseSendTargets(pairs []textKV) ([]DiscoveredTarget, error) {
	var targets []DiscoveredTarget
	for _, p := range pairs {
		switch p.Key {
		case "TargetName":
			if p.Value == "" {
				return nil, fmt.Errorf("%w: empty TargetName in SendTargets response", errMalformed)
			}
			targets = append(targets, DiscoveredTarget{Name: p.Value})
		case "TargetAddress":
			if len(targets) == 0 {
				return nil, fmt.Errorf("%w: TargetAddress %q before any TargetName", errMalformed, p.Value)
			}
			addr, err := parseTargetAddress(p.Value)
			if err != nil {
				return nil, err
			}
			t := &targets[len(targets)-1]
			t.Addresses = append(t.Addresses, addr)
		}
	}
	return targets, nil
}

func parseTargetAddress(v string) (DiscoveredPortal, error) {
	comma := strings.LastIndexByte(v, ',')
	if comma <= 0 {
		return DiscoveredPortal{}, fmt.Errorf("%w: TargetAddress %q lacks a portal group tag", errMalformed, v)
	}
	tag, err := strconv.ParseUint(v[comma+1:], 10, 16)
	if err != nil {
		return DiscoveredPortal{}, fmt.Errorf("%w: TargetAddress %q has a bad portal group tag: %v", errMalformed, v, err)
	}
	return DiscoveredPortal{Address: v[:comma], PortalGroupTag: uint16(tag)}, nil
}

// Login status classes and details (RFC 7143 §11.13.5).
const (
	statusClassSuccess    = 0
	statusClassRedirect   = 1
	statusClassInitiator  = 2
	statusClassTarget     = 3
	statusAuthFailure     = 0x0201
	statusForbidden       = 0x0202
	statusNotFound        = 0x0203
	statusTargetRemoved   = 0x0204
	statusUnsupportedVer  = 0x0205
	statusTooManyConns    = 0x0206
	statusMissingParam    = 0x0207
	statusNoSessionSpan   = 0x0208
	statusNoSessionType   = 0x0209
	statusNoSession       = 0x020a
	statusInvalidRequest  = 0x020b
	statusTargetError     = 0x0300
	statusSvcUnavailable  = 0x0301
	statusOutOfResources  = 0x0302
	statusMovedTemporary  = 0x0101
	statusMovedPermanent  = 0x0102
	statusProxyRedirect   = 0x0103
	statusNoStatusDetails = 0x0000
)

// loginStatusText names a login status the way RFC 7143 does, for error messages.
func loginStatusText(class, detail byte) string {
	code := uint16(class)<<8 | uint16(detail)
	switch code {
	case statusMovedTemporary:
		return "target moved temporarily"
	case statusMovedPermanent:
		return "target moved permanently"
	case statusProxyRedirect:
		return "proxy redirect"
	case statusAuthFailure:
		return "authentication failure"
	case statusForbidden:
		return "authorization failure"
	case statusNotFound:
		return "target not found"
	case statusTargetRemoved:
		return "target removed"
	case statusUnsupportedVer:
		return "unsupported version"
	case statusTooManyConns:
		return "too many connections"
	case statusMissingParam:
		return "missing parameter"
	case statusNoSessionSpan:
		return "cannot include in session"
	case statusNoSessionType:
		return "session type not supported"
	case statusNoSession:
		return "session does not exist"
	case statusInvalidRequest:
		return "invalid request during login"
	case statusTargetError:
		return "target error"
	case statusSvcUnavailable:
		return "service unavailable"
	case statusOutOfResources:
		return "out of resources"
	}
	switch class {
	case statusClassRedirect:
		return "redirection"
	case statusClassInitiator:
		return "initiator error"
	case statusClassTarget:
		return "target error"
	}
	return "unknown status"
}

// rejectReasonText names a Reject PDU reason (RFC 7143 §11.17.1).
func rejectReasonText(reason byte) string {
	switch reason {
	case 0x02:
		return "data digest error"
	case 0x03:
		return "SNACK reject"
	case 0x04:
		return "protocol error"
	case 0x05:
		return "command not supported"
	case 0x06:
		return "immediate command reject"
	case 0x07:
		return "task in progress"
	case 0x08:
		return "invalid data ack"
	case 0x09:
		return "invalid PDU field"
	case 0x0a:
		return "long operation reject"
	case 0x0b:
		return "deprecated reason code"
	case 0x0c:
		return "waiting for logout"
	}
	return "reserved reason"
}
