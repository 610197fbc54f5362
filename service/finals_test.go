package service

import (
	"fmt"
	"testing"
)

func TestFinalsEvictsOldestFirst(t *testing.T) {
	f := newFinals(3)
	for i := range 5 {
		f.put(fmt.Sprint("k", i), &final{attempts: i})
		if i == 1 {
			f.put("k0", &final{attempts: 99}) // a repeat neither replaces nor refreshes
		}
	}
	for i := range 5 {
		got, ok := f.get(fmt.Sprint("k", i))
		if want := i >= 2; ok != want {
			t.Errorf("k%d cached = %v, want %v", i, ok, want)
		}
		if ok && got.attempts != i {
			t.Errorf("k%d = %+v, want attempts %d", i, got, i)
		}
	}
	if len(f.m) != 3 || len(f.ring) != 3 {
		t.Errorf("map %d, ring %d entries; want 3 and 3", len(f.m), len(f.ring))
	}
	var none *finals = newFinals(0)
	none.put("k", &final{})
	if _, ok := none.get("k"); ok {
		t.Error("a zero-size cache returned an entry")
	}
}
