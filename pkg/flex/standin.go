//go:build petfabric_standin

package flex

import (
	"errors"
	"log/slog"

	utilexec "k8s.io/utils/exec"

	"github.com/petfabric/petfabric/pkg/flex/flextest"
	"github.com/petfabric/petfabric/pkg/iscsi"
)

// InitiatorLoopStandin selects the loop-device stand-in (tests only; built with
// -tags petfabric_standin, never in the production binary).
const InitiatorLoopStandin = "loop-standin"

func init() {
	RegisterInitiator(InitiatorLoopStandin, func(cfg *NodeConfig, _ utilexec.Interface, _ bool, _ *slog.Logger) (iscsi.Initiator, error) {
		if cfg.InitiatorDir == "" {
			return nil, errors.New("initiatorDir is required for the loop stand-in")
		}
		name, err := ReadInitiatorName(cfg.InitiatorNameFile)
		if err != nil {
			return nil, err
		}
		return &flextest.LoopInitiator{Dir: cfg.InitiatorDir, ByPathDir: cfg.ByPathDir, Name: name}, nil
	})
}
