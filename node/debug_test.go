package node

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestFreeMemory(t *testing.T) {
	rec := httptest.NewRecorder()
	freeMemory(rec, httptest.NewRequest(http.MethodPost, "/debug/gc", nil))
	var f gcFigures
	if err := json.Unmarshal(rec.Body.Bytes(), &f); err != nil {
		t.Fatalf("answer %q: %v", rec.Body.String(), err)
	}
	if f.HeapInuse == 0 || f.StackInuse == 0 || f.Goroutines == 0 || f.NumGC < 2 {
		t.Errorf("figures after GC: %+v", f)
	}
}
