package stripesim_test

import (
	"sync"
	"testing"
	"time"

	"github.com/billingd/billingd/internal/stripesim"
)

func TestManualClock(t *testing.T) {
	t.Parallel()
	c := stripesim.NewManualClock(epoch)
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 100 {
				c.Advance(time.Second)
				_ = c.Now()
			}
		}()
	}
	wg.Wait()
	if got, want := c.Now(), epoch.Add(800*time.Second); !got.Equal(want) {
		t.Errorf("Now = %v, want %v", got, want)
	}
	c.Set(epoch)
	if got := c.Now(); !got.Equal(epoch) {
		t.Errorf("after Set: %v, want %v", got, epoch)
	}
}
