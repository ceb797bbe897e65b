package mutate

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The class parameter was first named "backstore"; the PV option is "backstoreServer". A class
// may use either; backstoreServer wins when both are set.
func TestBackstoreClassParameterAlias(t *testing.T) {
	tests := []struct {
		name   string
		params map[string]string
		want   string
	}{
		{"backstore alias", map[string]string{"backstore": "10.0.0.5:7718"}, "10.0.0.5:7718"},
		{"backstoreServer", map[string]string{"backstoreServer": "10.0.0.6:7717"}, "10.0.0.6:7717"},
		{"both: backstoreServer wins", map[string]string{"backstore": "10.0.0.5:7718", "backstoreServer": "10.0.0.6:7717"}, "10.0.0.6:7717"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			params := map[string]string{"secretName": "creds", "secretNamespace": "petfabric-system"}
			for k, v := range tc.params {
				params[k] = v
			}
			before := len(params)
			o, err := resolveOptions(nil, params, nil, "storageclass gold", "spec.volumeClaimTemplates[0].metadata.annotations", 1)
			require.NoError(t, err)
			assert.Equal(t, tc.want, o.BackstoreServer)
			assert.Len(t, params, before, "the class's own parameter map is not modified")
		})
	}
	_, err := resolveOptions(nil, map[string]string{"backstore": "no-port", "secretName": "c", "secretNamespace": "n"}, nil, "storageclass gold", "a", 1)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "storageclass gold.parameters[backstore]", "the error names the parameter the admin wrote")
}
