package pvoptions

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"k8s.io/apimachinery/pkg/util/validation"
)

func TestPVNameIsInjectiveWhereTheOldNameCollided(t *testing.T) {
	// The version 1 name datera-<ns>-<claim> gave both of these "datera-team-a-data-db-0".
	a, b := PVName("team", "a-data-db-0"), PVName("team-a", "data-db-0")
	assert.NotEqual(t, a, b)
	assert.Equal(t, "datera-team.a-data-db-0", a)
	assert.Equal(t, "datera-team-a.data-db-0", b)
}

func TestPVNameValidAndDeterministic(t *testing.T) {
	long := strings.Repeat("c", 240) + ".x"
	for _, tc := range []struct{ ns, claim string }{
		{"default", "data-web-0"},
		{strings.Repeat("n", 63), "data-web-0"},
		{strings.Repeat("n", 63), long},
		{"a", long},
		{"a", strings.Repeat("d.", 120) + "e"},
	} {
		name := PVName(tc.ns, tc.claim)
		assert.Empty(t, validation.IsDNS1123Subdomain(name), name)
		assert.Equal(t, name, PVName(tc.ns, tc.claim))
		assert.Contains(t, name, ".", "every PV name holds a '.', which a pod volume name cannot")
		assert.NotEmpty(t, validation.IsDNS1123Label(name), "a PV name must never be a valid inline volume name")
		assert.True(t, IsPVNameOf(name, tc.ns, tc.claim))
	}
	// Truncated names of different claims with a shared prefix differ.
	assert.NotEqual(t, PVName("a", long+"1"), PVName("a", long+"2"))
}

func TestParseAccessMode(t *testing.T) {
	for in, want := range map[string]string{"": AccessReadWriteOnce, "ReadWriteOnce": AccessReadWriteOnce, "ReadOnlyMany": AccessReadOnlyMany} {
		got, err := ParseAccessMode(in)
		require.NoError(t, err)
		assert.Equal(t, want, got)
	}
	_, err := ParseAccessMode("ReadWriteMany")
	assert.EqualError(t, err, `option accessMode "ReadWriteMany": want ReadWriteOnce or ReadOnlyMany`)
}

func TestOwnerRoundTripsAndMismatchNamesBoth(t *testing.T) {
	o := Owner{ClusterID: "k0123456789abcdef", Namespace: "team-a", Claim: "data-db-0", NamespaceUID: "u1"}
	back, ok := OwnerFromOptions(o.Options())
	require.True(t, ok)
	assert.Equal(t, o, back)
	back, ok = OwnerFromMetadata(o.Metadata())
	require.True(t, ok)
	assert.Equal(t, o, back)
	_, ok = OwnerFromMetadata(map[string]string{})
	assert.False(t, ok)
	_, ok = OwnerFromOptions(map[string]string{"volumeID": "x"})
	assert.False(t, ok, "a version 1 PV has no owner")

	require.NoError(t, CheckSameOwner("v", o, o))
	reused := o
	reused.NamespaceUID = "u2"
	err := CheckSameOwner("vol", o, reused)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "namespace uid u1")
	assert.Contains(t, err.Error(), "namespace uid u2")
}

func TestDefaultClusterID(t *testing.T) {
	id, err := DefaultClusterID("1F0E2D3C-4B5A-6978-8796-a5b4c3d2e1f0")
	require.NoError(t, err)
	assert.Equal(t, "k1f0e2d3c4b5a6978", id)
	_, err = DefaultClusterID("")
	assert.Error(t, err)
	_, err = DefaultClusterID("not-a-uuid-zzzzzzzzzzzzzzzz")
	assert.Error(t, err)
}
