package iscsi

import (
	"bytes"
	"io"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseText(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    []textKV
		wantErr string
	}{
		{name: "empty", in: "", want: nil},
		{name: "one pair", in: "SendTargets=All\x00", want: []textKV{{"SendTargets", "All"}}},
		{name: "empty value", in: "TargetAlias=\x00", want: []textKV{{"TargetAlias", ""}}},
		{name: "value with =", in: "X=a=b\x00", want: []textKV{{"X", "a=b"}}},
		{name: "padding NULs skipped", in: "A=1\x00\x00\x00B=2\x00", want: []textKV{{"A", "1"}, {"B", "2"}}},
		{name: "order kept", in: "TargetName=t\x00TargetAddress=1.2.3.4:3260,1\x00", want: []textKV{{"TargetName", "t"}, {"TargetAddress", "1.2.3.4:3260,1"}}},
		{name: "missing terminator", in: "A=1", wantErr: "not NUL-terminated"},
		{name: "no equals", in: "garbage\x00", wantErr: "no key=value form"},
		{name: "empty key", in: "=v\x00", wantErr: "no key=value form"},
		{name: "key too long", in: string(bytes.Repeat([]byte("k"), 64)) + "=v\x00", wantErr: "longer than 63"},
		{name: "value too long", in: "K=" + string(bytes.Repeat([]byte("v"), 8193)) + "\x00", wantErr: "longer than 8192"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseText([]byte(tc.in))
			if tc.wantErr != "" {
				require.ErrorIs(t, err, errMalformed)
				assert.Contains(t, err.Error(), tc.wantErr)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, got)
		})
	}
}

func TestParseSendTargets(t *testing.T) {
	tests := []struct {
		name    string
		in      []textKV
		want    []DiscoveredTarget
		wantErr string
	}{
		{name: "nothing visible", in: nil, want: nil},
		{
			name: "two targets, several portals",
			in: []textKV{
				{"TargetName", "iqn.a"}, {"TargetAddress", "10.0.0.1:3260,1"}, {"TargetAlias", "ignored"},
				{"TargetAddress", "[fd00::1]:3260,7"}, {"TargetName", "iqn.b"},
			},
			want: []DiscoveredTarget{
				{Name: "iqn.a", Addresses: []DiscoveredPortal{{"10.0.0.1:3260", 1}, {"[fd00::1]:3260", 7}}},
				{Name: "iqn.b"},
			},
		},
		{name: "address first", in: []textKV{{"TargetAddress", "10.0.0.1:3260,1"}}, wantErr: "before any TargetName"},
		{name: "empty name", in: []textKV{{"TargetName", ""}}, wantErr: "empty TargetName"},
		{name: "no tag", in: []textKV{{"TargetName", "t"}, {"TargetAddress", "10.0.0.1:3260"}}, wantErr: "lacks a portal group tag"},
		{name: "bad tag", in: []textKV{{"TargetName", "t"}, {"TargetAddress", "10.0.0.1:3260,x"}}, wantErr: "bad portal group tag"},
		{name: "tag overflow", in: []textKV{{"TargetName", "t"}, {"TargetAddress", "10.0.0.1:3260,65536"}}, wantErr: "bad portal group tag"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseSendTargets(tc.in)
			if tc.wantErr != "" {
				require.ErrorIs(t, err, errMalformed)
				assert.Contains(t, err.Error(), tc.wantErr)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, got)
		})
	}
}

func TestReadPDU(t *testing.T) {
	p := &pdu{ahs: []byte{1, 2, 3, 4}, data: []byte("SendTargets=All\x00A")}
	p.bhs[0] = opTextResp
	p.bhs[1] = flagFinal
	wire := p.marshal()
	assert.Len(t, wire, bhsLen+4+20, "data padded to a multiple of 4")
	assert.Equal(t, byte(1), wire[4], "TotalAHSLength counts 4-byte words")

	got, err := readPDU(bytes.NewReader(wire), maxDataSegment)
	require.NoError(t, err)
	assert.Equal(t, p.bhs[0:4], got.bhs[0:4])
	assert.Equal(t, p.ahs, got.ahs)
	assert.Equal(t, p.data, got.data)

	t.Run("truncated header", func(t *testing.T) {
		_, err := readPDU(bytes.NewReader(wire[:20]), maxDataSegment)
		require.ErrorIs(t, err, io.ErrUnexpectedEOF)
	})
	t.Run("truncated data", func(t *testing.T) {
		_, err := readPDU(bytes.NewReader(wire[:len(wire)-2]), maxDataSegment)
		require.ErrorIs(t, err, io.ErrUnexpectedEOF)
	})
	t.Run("truncated AHS", func(t *testing.T) {
		_, err := readPDU(bytes.NewReader(wire[:bhsLen+2]), maxDataSegment)
		require.ErrorIs(t, err, io.ErrUnexpectedEOF)
	})
	t.Run("data over the limit", func(t *testing.T) {
		_, err := readPDU(bytes.NewReader(wire), 8)
		require.ErrorIs(t, err, errMalformed)
	})
	t.Run("empty stream", func(t *testing.T) {
		_, err := readPDU(bytes.NewReader(nil), maxDataSegment)
		require.ErrorIs(t, err, io.EOF)
	})
}

func TestDecodeBinary(t *testing.T) {
	tests := []struct {
		in      string
		want    []byte
		wantErr bool
	}{
		{in: "0x0a0B", want: []byte{0x0a, 0x0b}},
		{in: "0X1", want: []byte{0x01}},
		{in: "0x123", want: []byte{0x01, 0x23}},
		{in: "0bAQID", want: []byte{1, 2, 3}},
		{in: "0xzz", wantErr: true},
		{in: "0b!!", wantErr: true},
		{in: "1234", wantErr: true},
		{in: "0x", wantErr: true},
	}
	for _, tc := range tests {
		got, err := decodeBinary(tc.in)
		if tc.wantErr {
			assert.Error(t, err, tc.in)
			continue
		}
		require.NoError(t, err, tc.in)
		assert.Equal(t, tc.want, got, tc.in)
	}
}

func TestCHAPMD5(t *testing.T) {
	// RFC 1994 response for id 1, secret "secret", challenge 0x00..0x0f, computed
	// independently with coreutils: { printf '\x01secret'; printf '\x00\x01...\x0f'; } | md5sum
	ch := []byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15}
	assert.Equal(t, "0x740e86463bda3a4d7017d6e0fba0699d", encodeHex(chapMD5(1, "secret", ch)))
}
