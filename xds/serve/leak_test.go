package serve

import (
	"testing"

	"github.com/holdfast/holdfast/internal/testkit"
)

// TestMain fails the package if its tests leave a goroutine behind.
func TestMain(m *testing.M) { testkit.VerifyNoLeaks(m) }
