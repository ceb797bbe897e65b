package flex

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"regexp"
	"strings"

	"github.com/petfabric/petfabric/pkg/datera"
)

// DateraAPI is the part of *datera.Client the driver uses.
type DateraAPI interface {
	CreateAppInstance(ctx context.Context, req datera.CreateVolumeRequest) (*datera.AppInstance, error)
	GetAppInstance(ctx context.Context, name string) (*datera.AppInstance, error)
	GetMetadata(ctx context.Context, appInstance string) (map[string]string, error)
	SetMetadata(ctx context.Context, appInstance string, kv map[string]string) (map[string]string, error)
	GetACL(ctx context.Context, appInstance, storageInstance string) (*datera.ACLPolicy, error)
	SetPerformancePolicy(ctx context.Context, name string, p datera.PerformancePolicy) (*datera.PerformancePolicy, error)
	RegisterInitiator(ctx context.Context, iqn, name string, force bool) (*datera.Initiator, error)
	AddInitiatorToACL(ctx context.Context, appInstance, storageInstance, iqn string) error
	RemoveInitiatorFromACL(ctx context.Context, appInstance, storageInstance, iqn string) error
	SetAdminState(ctx context.Context, name string, state datera.AdminState, force bool) (*datera.AppInstance, error)
	WaitAvailable(ctx context.Context, name string) (*datera.AppInstance, error)
}

var _ DateraAPI = (*datera.Client)(nil)

// DateraParams select the cluster, tenant and login.
type DateraParams struct {
	Endpoint string
	Tenant   string
	Username string
	Password string
}

// LogValue keeps the password out of logs.
func (p DateraParams) LogValue() slog.Value {
	return slog.GroupValue(slog.String("endpoint", p.Endpoint), slog.String("tenant", p.Tenant), slog.String("username", p.Username))
}

// newDateraClient is the production factory: a datera.Client with the node's TLS settings.
func newDateraClient(cfg *NodeConfig, log *slog.Logger) func(DateraParams) (DateraAPI, error) {
	return func(p DateraParams) (DateraAPI, error) {
		c := datera.Config{
			Endpoint: p.Endpoint, Username: p.Username, Password: p.Password, Tenant: p.Tenant,
			DriverName: "petfabric-flex", InsecureSkipVerify: cfg.DateraInsecureSkipVerify, Logger: log,
		}
		if cfg.DateraCAFile != "" {
			pem, err := os.ReadFile(cfg.DateraCAFile)
			if err != nil {
				return nil, fmt.Errorf("datera CA file: %w", err)
			}
			c.CACertPEM = pem
		}
		return datera.New(c)
	}
}

var labelRE = regexp.MustCompile(`[^a-zA-Z0-9_.-]+`)

// initiatorLabelPrefix starts the Datera name of every petfabric node's initiator.
const initiatorLabelPrefix = "petfabric-"

// initiatorLabel is the Datera name of this node's initiator: "petfabric-<node>", reduced to the
// characters Datera accepts.
func initiatorLabel(node string) string {
	l := initiatorLabelPrefix + labelRE.ReplaceAllString(node, "-")
	if len(l) > 128 {
		l = l[:128]
	}
	return strings.TrimRight(l, "-")
}
