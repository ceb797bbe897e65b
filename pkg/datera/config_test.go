package datera_test

import (
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/petfabric/petfabric/pkg/datera"
)

func TestEndpointForBackstore(t *testing.T) {
	tests := []struct {
		in, want, wantErr string
	}{
		{in: "10.0.0.5:7718", want: "https://10.0.0.5:7718"},
		{in: "10.0.0.5:7717", want: "http://10.0.0.5:7717"},
		{in: "datera.example.com:7718", want: "https://datera.example.com:7718"},
		{in: " datera.example.com:7717 ", want: "http://datera.example.com:7717"},
		{in: "datera.example.com", want: "https://datera.example.com:7718"},
		{in: "[fd00::5]:7718", want: "https://[fd00::5]:7718"},
		{in: "fd00::5", want: "https://[fd00::5]:7718"},
		{in: "https://127.0.0.1:40123", want: "https://127.0.0.1:40123"},
		{in: "http://127.0.0.1:40123", want: "http://127.0.0.1:40123"},
		{in: "10.0.0.5:8443", wantErr: "cannot infer"},
		{in: "10.0.0.5:http", wantErr: "bad port"},
		{in: ":7718", wantErr: "no host"},
		{in: "", wantErr: "empty"},
		{in: "https://", wantErr: "not a valid URL"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := datera.EndpointForBackstore(tt.in)
			if tt.wantErr != "" {
				require.ErrorContains(t, err, tt.wantErr)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.want, got)
		})
	}
}

func TestNormalizeTenant(t *testing.T) {
	for in, want := range map[string]string{
		"": "/root", "/root": "/root", "root": "/root", "team-a": "/root/team-a", "/team-a": "/root/team-a",
		"/root/team-a": "/root/team-a", "root/team-a": "/root/team-a", "/root/a/b": "/root/a/b",
	} {
		assert.Equal(t, want, datera.NormalizeTenant(in), in)
	}
}

func TestValidators(t *testing.T) {
	names := []struct {
		name string
		ok   bool
	}{
		{"abc", true}, {"_ab", true}, {"a.b-c_d", true}, {"A12", true},
		{"ab", false}, {"1ab", false}, {"-ab", false}, {".ab", false}, {"a b", false}, {"a/b", false}, {"aé", false},
		{"a" + strings.Repeat("x", 63), true}, {"a" + strings.Repeat("x", 64), false},
		{"1e52946a-3f3c-4d2a-9a9e-1f2b3c4d5e6f", true}, // a bare UUID is an app_instance id
	}
	for _, n := range names {
		err := datera.ValidateAppInstanceName(n.name)
		assert.Equal(t, n.ok, err == nil, "app_instance %q: %v", n.name, err)
		if !n.ok {
			assert.ErrorIs(t, err, datera.ErrValidation)
		}
	}
	assert.Error(t, datera.ValidateName("volume", "1e52946a-3f3c-4d2a-9a9e-1f2b3c4d5e6f"), "only app_instances accept a UUID")

	iqns := []struct {
		id string
		ok bool
	}{
		{"iqn.1993-08.org.debian:01:abc", true},
		{"iqn.1993-08.org.debian:" + strings.Repeat("x", 200), true}, // exactly 223
		{"iqn.2013-05.com.daterainc:tc:01:sn:0123456789abcdef", true},
		{"eui.0123456789abcdef", true},
		{"iqn.1993-08.org", false},                                    // under 16 characters
		{"iqn.1993-13.org.debian:01", false},                          // month 13 passes [0-1][0-9]? no: 13 is allowed by the schema
		{"iqn.93-08.org.debian:01:abc", false},                        // 2-digit year
		{"iqn.1993-08.org/debian:01:abc", false},                      // slash
		{"eui.0123456789abcde", false},                                // 15 hex
		{"iqn.1993-08.org.debian:" + strings.Repeat("x", 201), false}, // over 223
	}
	for _, tt := range iqns {
		err := datera.ValidateInitiatorID(tt.id)
		if tt.id == "iqn.1993-13.org.debian:01" {
			assert.NoError(t, err, "the schema's [0-1][0-9] month accepts 13; mirrored exactly")
			continue
		}
		assert.Equal(t, tt.ok, err == nil, "%q: %v", tt.id, err)
	}

	for _, n := range []int64{0, -1, 32769} {
		assert.ErrorIs(t, datera.ValidateSize(n), datera.ErrValidation, n)
	}
	for _, n := range []int64{1, 32768} {
		assert.NoError(t, datera.ValidateSize(n), n)
	}
	for n := -1; n <= 6; n++ {
		assert.Equal(t, n >= 1 && n <= 5, datera.ValidateReplicaCount(n) == nil, n)
	}
}

func TestConfigRedactsPassword(t *testing.T) {
	cfg := datera.Config{Endpoint: "https://127.0.0.1:7718", Username: "admin", Password: "s3cret-Pass"}
	for _, out := range []string{fmt.Sprint(cfg), fmt.Sprintf("%v", cfg), fmt.Sprintf("%+v", cfg), cfg.String()} {
		assert.NotContains(t, out, "s3cret-Pass")
		assert.Contains(t, out, "admin")
	}
	var buf strings.Builder
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("config", "cfg", cfg)
	assert.NotContains(t, buf.String(), "s3cret-Pass")
	assert.Contains(t, buf.String(), "(redacted)")
}
