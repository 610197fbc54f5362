// Package codec is the stored form of a billingd record, shared by both
// record stores (bbolt in storage, PostgreSQL in storage/postgres): a format
// byte and the storagev1.Record protobuf. A record reads the same whichever
// store wrote it.
package codec

import (
	"errors"
	"fmt"
	"math"
	"time"

	"google.golang.org/protobuf/proto"

	storagev1 "github.com/billingd/billingd/gen/billingd/storage/v1"
	"github.com/billingd/billingd/service"
)

// FormatProto is the first byte of every stored record value: the rest is a
// storagev1.Record. Protobuf already keeps added fields compatible in both
// directions; the byte exists so that a later change protobuf cannot express
// (another encoding, compression, encryption) can be told apart from today's
// records without guessing.
const FormatProto byte = 1

// The errors of Encode and Decode (storage re-exports them).
var (
	// ErrInvalidRecord means a record cannot be stored.
	ErrInvalidRecord = errors.New("storage: invalid record")
	// ErrCorrupt means a stored value is not one this version can read.
	ErrCorrupt = errors.New("storage: corrupt or unsupported data")
)

// Encode returns rec's stored value: the format byte and the
// storagev1.Record. Every record store of billingd stores records in this
// encoding (storage/postgres keeps it in a bytea column), so a record reads
// the same whichever store wrote it. Errors wrap ErrInvalidRecord.
func Encode(rec service.Record) ([]byte, error) { return encodeRecord(&rec) }

// Decode is Encode's inverse. Errors wrap ErrCorrupt.
func Decode(v []byte) (service.Record, error) { return decodeRecord(v) }

// encodeRecord returns rec's stored value. It is called outside any
// transaction, so an unencodable record fails alone instead of failing the
// batch it would have joined.
func encodeRecord(rec *service.Record) ([]byte, error) {
	return EncodeProto(ToProto(rec))
}

// EncodeProto is encodeRecord for a message the caller also needs (a write
// indexes the record by its state and times).
func EncodeProto(m *storagev1.Record) ([]byte, error) {
	n := proto.Size(m)
	buf := make([]byte, 1, 1+n)
	buf[0] = FormatProto
	// UseCachedSize reuses the Size computed above instead of walking the
	// message a second time.
	buf, err := proto.MarshalOptions{UseCachedSize: true}.MarshalAppend(buf, m)
	if err != nil {
		return nil, fmt.Errorf("%w: encode: %v", ErrInvalidRecord, err)
	}
	return buf, nil
}

// decodeRecord decodes a stored value. v may point into bbolt's mmap: the
// protobuf decoder copies every string and bytes field out of its input, so
// the returned record stays valid after the transaction ends and needs no
// second copy.
func decodeRecord(v []byte) (service.Record, error) {
	m, err := DecodeProto(v)
	if err != nil {
		return service.Record{}, err
	}
	if m.Implied != 0 {
		return service.Record{}, fmt.Errorf("%w: a compact value decodes only with its key", ErrCorrupt)
	}
	return FromProto(m), nil
}

// DecodeProto checks the format byte and unmarshals the message. Index
// maintenance uses it directly: it needs only state and times.
func DecodeProto(v []byte) (*storagev1.Record, error) {
	if len(v) == 0 {
		return nil, fmt.Errorf("%w: empty value", ErrCorrupt)
	}
	if v[0] != FormatProto {
		return nil, fmt.Errorf("%w: unknown format %d", ErrCorrupt, v[0])
	}
	m := new(storagev1.Record)
	if err := proto.Unmarshal(v[1:], m); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	return m, nil
}

func ToProto(rec *service.Record) *storagev1.Record {
	m := &storagev1.Record{
		Caller:               rec.Caller,
		RequestId:            rec.RequestID,
		Method:               string(rec.Method),
		Fingerprint:          rec.Fingerprint,
		StripeKey:            rec.StripeKey,
		State:                int32(rec.State),
		Attempts:             int32(rec.Attempts),
		CreateUnixNano:       UnixNano(rec.Created),
		FirstAttemptUnixNano: UnixNano(rec.FirstAttempt),
		UpdateUnixNano:       UnixNano(rec.Updated),
		RequestKey:           rec.RequestKey,
		Params:               rec.Params,
	}
	if r := &rec.Result; r.ObjectID != "" || r.Status != "" || r.Amount != 0 || r.Currency != "" ||
		r.PaymentStatus != "" || r.ClientSecret != "" || r.NextActionType != "" || r.RedirectURL != "" ||
		r.CancellationReason != "" || r.CancelAtPeriodEnd || r.ParentID != "" {
		m.Result = &storagev1.Result{
			ObjectId:       r.ObjectID,
			Status:         r.Status,
			Amount:         r.Amount,
			Currency:       r.Currency,
			PaymentStatus:  r.PaymentStatus,
			ClientSecret:   r.ClientSecret,
			NextActionType: r.NextActionType,
			RedirectUrl:    r.RedirectURL,

			CancellationReason: r.CancellationReason,
			CancelAtPeriodEnd:  r.CancelAtPeriodEnd,
			ParentId:           r.ParentID,
		}
	}
	if e := rec.Err; e != nil {
		pe := &storagev1.Error{
			Reason:           string(e.Reason),
			Message:          e.Message,
			Metadata:         e.Metadata,
			ResourceType:     e.ResourceType,
			ResourceName:     e.ResourceName,
			RetryAfterMillis: retryMillis(e.RetryAfter),
		}
		if len(e.Violations) > 0 {
			pe.Violations = make([]*storagev1.Violation, len(e.Violations))
			for i, v := range e.Violations {
				pe.Violations[i] = &storagev1.Violation{Field: v.Field, Description: v.Description}
			}
		}
		m.Error = pe
	}
	return m
}

// FromProto moves m's fields into a service.Record. m is freshly decoded
// and owned by the caller, so its slices and map are handed over, not copied.
func FromProto(m *storagev1.Record) service.Record {
	rec := service.Record{
		Caller:       m.Caller,
		RequestID:    m.RequestId,
		Method:       service.Method(m.Method),
		Fingerprint:  m.Fingerprint,
		StripeKey:    m.StripeKey,
		RequestKey:   m.RequestKey,
		Params:       m.Params,
		State:        service.State(m.State),
		Attempts:     int(m.Attempts),
		Created:      FromUnixNano(m.CreateUnixNano),
		FirstAttempt: FromUnixNano(m.FirstAttemptUnixNano),
		Updated:      FromUnixNano(m.UpdateUnixNano),
	}
	if r := m.Result; r != nil {
		rec.Result = service.Result{
			ObjectID:       r.ObjectId,
			Status:         r.Status,
			Amount:         r.Amount,
			Currency:       r.Currency,
			PaymentStatus:  r.PaymentStatus,
			ClientSecret:   r.ClientSecret,
			NextActionType: r.NextActionType,
			RedirectURL:    r.RedirectUrl,

			CancellationReason: r.CancellationReason,
			CancelAtPeriodEnd:  r.CancelAtPeriodEnd,
			ParentID:           r.ParentId,
		}
	}
	if pe := m.Error; pe != nil {
		e := &service.Error{
			Reason:       service.Reason(pe.Reason),
			Message:      pe.Message,
			ResourceType: pe.ResourceType,
			ResourceName: pe.ResourceName,
			RetryAfter:   time.Duration(pe.RetryAfterMillis) * time.Millisecond,
		}
		if len(pe.Metadata) > 0 { // empty and absent decode alike: nil
			e.Metadata = pe.Metadata
		}
		if len(pe.Violations) > 0 {
			e.Violations = make([]service.FieldViolation, len(pe.Violations))
			for i, v := range pe.Violations {
				e.Violations[i] = service.FieldViolation{Field: v.Field, Description: v.Description}
			}
		}
		rec.Err = e
	}
	return rec
}

// unixNano stores the zero time as 0, the proto3 default, so an unset time
// costs no bytes and decodes back to the zero time.
func UnixNano(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

// fromUnixNano is unixNano's inverse. Times come back in UTC and without a
// monotonic reading; compare them with Equal.
func FromUnixNano(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}

// retryMillis rounds up, so a positive RetryAfter below a millisecond still
// produces RetryInfo after a round trip instead of silently vanishing.
func retryMillis(d time.Duration) int64 {
	if d <= 0 {
		return 0
	}
	ms := int64(d / time.Millisecond)
	if d%time.Millisecond != 0 && ms < math.MaxInt64 {
		ms++
	}
	return ms
}
