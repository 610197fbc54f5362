package storage

import (
	"time"

	storagev1 "github.com/billingd/billingd/gen/billingd/storage/v1"
	"github.com/billingd/billingd/service"
	"github.com/billingd/billingd/storage/codec"
)

// The stored form of a record is package codec's, shared with
// storage/postgres; these names keep this package's code short.

// EncodeRecord returns rec's stored value (codec.Encode). Errors wrap
// ErrInvalidRecord.
func EncodeRecord(rec service.Record) ([]byte, error) { return codec.Encode(rec) }

// DecodeRecord is EncodeRecord's inverse (codec.Decode). Errors wrap ErrCorrupt.
func DecodeRecord(v []byte) (service.Record, error) { return codec.Decode(v) }

func encodeProto(m *storagev1.Record) ([]byte, error) { return codec.EncodeProto(m) }

func decodeProto(v []byte) (*storagev1.Record, error) { return codec.DecodeProto(v) }

func toProto(rec *service.Record) *storagev1.Record { return codec.ToProto(rec) }

func fromProto(m *storagev1.Record) service.Record { return codec.FromProto(m) }

func unixNano(t time.Time) int64 { return codec.UnixNano(t) }
