//! The DynamoDB store (DESIGN §6): Sources (config, lease, watermark), Records, Runs
//! (TTL) and Members. Leases and watermarks move with conditional updates; records go
//! in BatchWriteItem requests of 25, after a BatchGetItem of their stored hashes.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, DeleteRequest, GlobalSecondaryIndex, KeySchemaElement, KeyType,
    KeysAndAttributes, Projection, ProjectionType, Put, PutRequest, ReturnValue, ScalarAttributeType, Select,
    StreamSpecification, StreamViewType, TimeToLiveSpecification, TransactWriteItem, Update, WriteRequest,
};
use chrono::{DateTime, Utc};
use rand::Rng;
use sluice_core::stored::{
    StoredSource, decode_job, decode_run, encode_config, encode_job, encode_run, job_status, to_micros,
};
use sluice_core::{
    BackendError, Backfill, BackfillCreated, BackfillJobs, Cadence, Connection, ConnectionStore, DeliveryLog,
    DeliveryState, DeliveryStatus, LeaseOutcome, Member, Record, RecordBatch, RecordReader, RecordWriter, Reject, Run,
    RunLog, SaveOutcome, SourceConfig, SourceState, SourceStore, StoreError, StoredRecord, Value, WriteStats,
};

use crate::item::{Item, attribute, n, s, stored_record};

/// DynamoDB's limits on one BatchWriteItem and one BatchGetItem.
const WRITE_BATCH: usize = 25;
const GET_BATCH: usize = 100;
/// Attempts at the items DynamoDB leaves unprocessed (throttling) before giving up.
const ATTEMPTS: u32 = 10;

/// The four table names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableNames {
    pub sources: String,
    pub records: String,
    pub runs: String,
    pub members: String,
}

impl TableNames {
    /// `{prefix}Sources`, `{prefix}Records`, `{prefix}Runs`, `{prefix}Members`.
    pub fn with_prefix(prefix: &str) -> Self {
        TableNames {
            sources: format!("{prefix}Sources"),
            records: format!("{prefix}Records"),
            runs: format!("{prefix}Runs"),
            members: format!("{prefix}Members"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct DynamoStore {
    client: Client,
    tables: TableNames,
}

fn sdk<E, R>(operation: &'static str) -> impl FnOnce(SdkError<E, R>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    move |e| {
        let mut error = crate::aws_error(e);
        if error.code.as_deref() == Some("ResourceNotFoundException") {
            error.message.push_str(
                " (a table is missing: deploy the stack, or check SLUICE_SOURCES_TABLE, SLUICE_RECORDS_TABLE, SLUICE_RUNS_TABLE and SLUICE_MEMBERS_TABLE)",
            );
        }
        StoreError::backend(operation, error)
    }
}

fn key(pk: (&str, &str), sk: Option<(&str, &str)>) -> Item {
    let mut k = HashMap::from([(pk.0.to_string(), AttributeValue::S(pk.1.to_string()))]);
    if let Some((name, value)) = sk {
        k.insert(name.to_string(), AttributeValue::S(value.to_string()));
    }
    k
}

fn num(v: i64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

/// Backoff with full jitter: 50 ms doubling, at most 5 s.
async fn backoff(attempt: u32) {
    let cap = (50u64 << attempt.min(7)).min(5_000);
    let ms = rand::rng().random_range(0..=cap);
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

impl DynamoStore {
    pub fn new(client: Client, tables: TableNames) -> Self {
        DynamoStore { client, tables }
    }

    pub fn tables(&self) -> &TableNames {
        &self.tables
    }

    /// Creates the four tables when absent (local endpoints and tests; in AWS,
    /// template.yaml creates them).
    pub async fn create_tables(&self) -> Result<(), StoreError> {
        let t = &self.tables;
        self.create_table(&t.sources, "source_id", None, false, false).await?;
        // The Records table's stream feeds the delivery of calls, as in template.yaml.
        self.create_table(&t.records, "source_id", Some("record_key"), true, false)
            .await?;
        // The Runs table holds the delivery log and its index of parked calls.
        self.create_table(&t.runs, "source_id", Some("run_id"), false, true)
            .await?;
        self.create_table(&t.members, "pk", Some("sk"), false, false).await?;
        // Best effort: some emulators lack TTL; AWS has it and template.yaml sets it.
        let ttl = TimeToLiveSpecification::builder()
            .enabled(true)
            .attribute_name("expires_at")
            .build()
            .expect("complete");
        let _ = self
            .client
            .update_time_to_live()
            .table_name(&t.runs)
            .time_to_live_specification(ttl)
            .send()
            .await;
        Ok(())
    }

    async fn create_table(
        &self,
        name: &str,
        pk: &str,
        sk: Option<&str>,
        stream: bool,
        parked_index: bool,
    ) -> Result<(), StoreError> {
        let typed = |n: &str, t: ScalarAttributeType| {
            AttributeDefinition::builder()
                .attribute_name(n)
                .attribute_type(t)
                .build()
                .expect("complete")
        };
        let attr = |n: &str| typed(n, ScalarAttributeType::S);
        let elem = |n: &str, k: KeyType| {
            KeySchemaElement::builder()
                .attribute_name(n)
                .key_type(k)
                .build()
                .expect("complete")
        };
        let mut req = self
            .client
            .create_table()
            .table_name(name)
            .billing_mode(BillingMode::PayPerRequest)
            .attribute_definitions(attr(pk))
            .key_schema(elem(pk, KeyType::Hash));
        if let Some(sk) = sk {
            req = req.attribute_definitions(attr(sk)).key_schema(elem(sk, KeyType::Range));
        }
        if stream {
            req = req.stream_specification(
                StreamSpecification::builder()
                    .stream_enabled(true)
                    .stream_view_type(StreamViewType::NewImage)
                    .build()
                    .expect("complete"),
            );
        }
        if parked_index {
            req = req
                .attribute_definitions(attr(PARKED_SOURCE))
                .attribute_definitions(typed(PARKED_AT, ScalarAttributeType::N))
                .global_secondary_indexes(
                    GlobalSecondaryIndex::builder()
                        .index_name(PARKED_INDEX)
                        .key_schema(elem(PARKED_SOURCE, KeyType::Hash))
                        .key_schema(elem(PARKED_AT, KeyType::Range))
                        .projection(Projection::builder().projection_type(ProjectionType::All).build())
                        .build()
                        .expect("complete"),
                );
        }
        match req.send().await {
            Ok(_) => Ok(()),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_resource_in_use_exception()) => Ok(()),
            Err(e) => Err(sdk("creating a table")(e)),
        }
    }

    fn state(item: &Item) -> Result<SourceState, StoreError> {
        StoredSource {
            config: s(item, "config"),
            watermark_us: n(item, "watermark_us"),
            lease_token: s(item, "lease_token"),
            lease_expires_us: n(item, "lease_expires_us"),
            active_backfill: s(item, "active_backfill"),
            effective_minutes: n(item, "effective_minutes"),
            fast_runs: n(item, "fast_runs"),
            narrowed_window_s: n(item, "narrowed_window_s"),
            ssh_host_key: s(item, "ssh_host_key"),
        }
        .decode(&s(item, "source_id").unwrap_or_default())
    }

    async fn get_item_consistent(&self, id: &str) -> Result<Option<Item>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.tables.sources)
            .set_key(Some(key(("source_id", id), None)))
            .consistent_read(true)
            .send()
            .await
            .map_err(sdk("reading a source"))?;
        Ok(out.item)
    }

    /// Writes `requests` in requests of 25 (none comes from a source's row: a request
    /// DynamoDB refuses fails the call).
    async fn batch_write(&self, table: &str, requests: Vec<WriteRequest>) -> Result<(), StoreError> {
        match self.write_each(table, &requests, WriteRequest::clone).await?.pop() {
            None => Ok(()),
            Some((_, reason)) => Err(StoreError::backend(
                "writing (BatchWriteItem)",
                BackendError::message(reason),
            )),
        }
    }

    /// Writes one request per item, made by `request`, in requests of 25. A request
    /// DynamoDB refuses as invalid (a limit mapping did not foresee) is halved until
    /// the item it refuses is found: the others are written, and that item's index is
    /// returned with DynamoDB's reason, so one bad row never fails a batch.
    async fn write_each<T>(
        &self,
        table: &str,
        items: &[T],
        request: impl Fn(&T) -> WriteRequest,
    ) -> Result<Vec<(usize, String)>, StoreError> {
        let mut refused = Vec::new();
        // Ranges still to write, the next one last.
        let mut parts: Vec<std::ops::Range<usize>> = (0..items.len())
            .step_by(WRITE_BATCH)
            .map(|start| start..(start + WRITE_BATCH).min(items.len()))
            .rev()
            .collect();
        while let Some(part) = parts.pop() {
            let requests = items[part.clone()].iter().map(&request).collect();
            match self.send_batch(table, requests).await? {
                None => {}
                Some(reason) if part.len() == 1 => refused.push((part.start, reason)),
                Some(_) => {
                    let middle = part.start + part.len() / 2;
                    parts.push(middle..part.end);
                    parts.push(part.start..middle);
                }
            }
        }
        Ok(refused)
    }

    /// Sends one BatchWriteItem, retrying unprocessed items with backoff; DynamoDB's
    /// reason when it refuses the request as invalid.
    async fn send_batch(&self, table: &str, mut pending: Vec<WriteRequest>) -> Result<Option<String>, StoreError> {
        let mut attempt = 0;
        while !pending.is_empty() {
            let out = match self
                .client
                .batch_write_item()
                .request_items(table, pending)
                .send()
                .await
            {
                Ok(out) => out,
                Err(e) => match e.as_service_error().filter(|s| s.code() == Some("ValidationException")) {
                    Some(refused) => return Ok(Some(refused.message().unwrap_or("ValidationException").to_string())),
                    None => return Err(sdk("writing records (BatchWriteItem)")(e)),
                },
            };
            pending = out
                .unprocessed_items
                .and_then(|mut u| u.remove(table))
                .unwrap_or_default();
            if !pending.is_empty() {
                attempt += 1;
                if attempt >= ATTEMPTS {
                    return Err(StoreError::backend(
                        "writing records (BatchWriteItem)",
                        BackendError::message(format!(
                            "{} items still unprocessed after {ATTEMPTS} attempts (throttled)",
                            pending.len()
                        )),
                    ));
                }
                backoff(attempt).await;
            }
        }
        Ok(None)
    }

    /// The stored hashes of `records`, by key (eventually consistent: a stale hash
    /// only causes one extra write).
    async fn stored_hashes(&self, source_id: &str, records: &[Record]) -> Result<HashMap<String, String>, StoreError> {
        let table = &self.tables.records;
        let mut hashes = HashMap::with_capacity(records.len());
        for chunk in records.chunks(GET_BATCH) {
            let mut keys: Vec<Item> = chunk
                .iter()
                .map(|r| key(("source_id", source_id), Some(("record_key", &r.key))))
                .collect();
            let mut attempt = 0;
            while !keys.is_empty() {
                let request = KeysAndAttributes::builder()
                    .set_keys(Some(keys))
                    .projection_expression("record_key, #h")
                    .expression_attribute_names("#h", "_hash")
                    .build()
                    .expect("keys set");
                let out = self
                    .client
                    .batch_get_item()
                    .request_items(table, request)
                    .send()
                    .await
                    .map_err(sdk("reading record hashes (BatchGetItem)"))?;
                for item in out.responses.and_then(|mut r| r.remove(table)).unwrap_or_default() {
                    if let (Some(k), Some(h)) = (s(&item, "record_key"), s(&item, "_hash")) {
                        hashes.insert(k, h);
                    }
                }
                keys = out
                    .unprocessed_keys
                    .and_then(|mut u| u.remove(table))
                    .map(|k| k.keys)
                    .unwrap_or_default();
                if !keys.is_empty() {
                    attempt += 1;
                    if attempt >= ATTEMPTS {
                        return Err(StoreError::backend(
                            "reading record hashes (BatchGetItem)",
                            BackendError::message(format!(
                                "keys still unprocessed after {ATTEMPTS} attempts (throttled)"
                            )),
                        ));
                    }
                    backoff(attempt).await;
                }
            }
        }
        Ok(hashes)
    }

    /// Every item of the Sources table (one per source: small), or those `filter` keeps.
    async fn scan_sources(&self, filter: Option<&str>, operation: &'static str) -> Result<Vec<Item>, StoreError> {
        let mut items = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let out = self
                .client
                .scan()
                .table_name(&self.tables.sources)
                .consistent_read(true)
                .set_filter_expression(filter.map(str::to_string))
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(sdk(operation))?;
            items.extend(out.items.unwrap_or_default());
            match out.last_evaluated_key {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => return Ok(items),
            }
        }
    }

    fn record_item(source_id: &str, r: &Record) -> Item {
        let mut item = HashMap::with_capacity(r.fields.values.len() + 3);
        for (name, value) in r.fields.iter() {
            item.insert(name.to_string(), attribute(value));
        }
        item.insert("source_id".into(), AttributeValue::S(source_id.to_string()));
        item.insert("record_key".into(), AttributeValue::S(r.key.clone()));
        item.insert("_hash".into(), AttributeValue::S(r.hash_hex()));
        item
    }

    async fn query_all(
        &self,
        table: &str,
        pk: (&str, &str),
        select_count: bool,
    ) -> Result<(Vec<Item>, u64), StoreError> {
        let mut items = Vec::new();
        let mut count = 0u64;
        let mut start: Option<Item> = None;
        loop {
            let mut q = self
                .client
                .query()
                .table_name(table)
                .key_condition_expression("#pk = :pk")
                .expression_attribute_names("#pk", pk.0)
                .expression_attribute_values(":pk", AttributeValue::S(pk.1.to_string()))
                .set_exclusive_start_key(start.take());
            if select_count {
                q = q.select(Select::Count);
            }
            let out = q.send().await.map_err(sdk("querying"))?;
            count += out.count as u64;
            items.extend(out.items.unwrap_or_default());
            match out.last_evaluated_key {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => return Ok((items, count)),
            }
        }
    }
}

/// Backfill jobs live in the Runs table under their own partition per source, so the
/// import log's queries never see them.
fn backfill_pk(source_id: &str) -> String {
    format!("backfill#{source_id}")
}

/// The sparse index of parked calls (template.yaml, RunsTable): only a `waiting`
/// delivery state carries its keys, so the index holds parked calls alone, by source
/// and next attempt, and a state written over without them leaves it.
const PARKED_INDEX: &str = "parked";
const PARKED_SOURCE: &str = "parked_source";
const PARKED_AT: &str = "next_attempt_us";

/// Delivery states too, a partition per source, one item per record.
fn delivery_pk(source_id: &str) -> String {
    format!("delivery#{source_id}")
}

impl DynamoStore {
    fn backfill(item: &Item) -> Result<Backfill, StoreError> {
        decode_job(
            &s(item, "run_id").unwrap_or_default(),
            &s(item, "body").unwrap_or_default(),
            n(item, "version").unwrap_or(0),
            n(item, "cancel_requested_us"),
        )
    }

    /// The update that saves `job`'s body if the stored version is still `job.version`.
    fn backfill_update(&self, job: &Backfill) -> Update {
        let mut values = HashMap::from([
            (":b".to_string(), AttributeValue::S(encode_job(job))),
            (":s".to_string(), AttributeValue::S(job_status(job).into())),
            (":v".to_string(), num(job.version as i64)),
            (":nv".to_string(), num(job.version as i64 + 1)),
        ]);
        let mut set = "SET body = :b, #st = :s, version = :nv".to_string();
        if let Some(finished) = job.finished_at {
            // Finished jobs expire like run logs.
            set.push_str(", expires_at = :x");
            let expires = finished + chrono::Duration::days(sluice_core::run::RUN_RETENTION_DAYS);
            values.insert(":x".into(), num(expires.timestamp()));
        }
        Update::builder()
            .table_name(&self.tables.runs)
            .set_key(Some(key(
                ("source_id", &backfill_pk(&job.source_id)),
                Some(("run_id", &job.id)),
            )))
            .update_expression(set)
            .condition_expression("version = :v")
            .expression_attribute_names("#st", "status")
            .set_expression_attribute_values(Some(values))
            .build()
            .expect("complete")
    }
}

fn run_body(source_id: &str, item: &Item) -> Result<Run, StoreError> {
    decode_run(source_id, &s(item, "body").unwrap_or_default())
}

fn put_condition_failed<R>(e: &SdkError<aws_sdk_dynamodb::operation::put_item::PutItemError, R>) -> bool {
    e.as_service_error()
        .is_some_and(|s| s.is_conditional_check_failed_exception())
}

/// Connections and member-namespace claims live in the Members table, apart from the
/// members (`member#…`, `team#…`): connections under one partition (few, listed
/// together), each claim under its own.
const CONNECTIONS_PK: &str = "connection";
const CLAIM_SK: &str = "claim";

fn claim_pk(namespace: &str) -> String {
    format!("claim#{namespace}")
}

fn is_condition_failed<R>(e: &SdkError<aws_sdk_dynamodb::operation::update_item::UpdateItemError, R>) -> bool {
    e.as_service_error()
        .is_some_and(|s| s.is_conditional_check_failed_exception())
}

#[async_trait]
impl SourceStore for DynamoStore {
    async fn put_source(&self, config: &SourceConfig) -> Result<(), StoreError> {
        self.client
            .update_item()
            .table_name(&self.tables.sources)
            .set_key(Some(key(("source_id", &config.id), None)))
            .update_expression("SET config = :c")
            .expression_attribute_values(":c", AttributeValue::S(encode_config(config)))
            .send()
            .await
            .map_err(sdk("saving a source"))?;
        Ok(())
    }

    async fn create_source(&self, config: &SourceConfig) -> Result<bool, StoreError> {
        let out = self
            .client
            .put_item()
            .table_name(&self.tables.sources)
            .item("source_id", AttributeValue::S(config.id.clone()))
            .item("config", AttributeValue::S(encode_config(config)))
            .condition_expression("attribute_not_exists(source_id)")
            .send()
            .await;
        match out {
            Ok(_) => Ok(true),
            Err(e) if put_condition_failed(&e) => Ok(false),
            Err(e) => Err(sdk("creating a source")(e)),
        }
    }

    async fn claim_member_namespace(&self, namespace: &str, source_id: &str) -> Result<Option<String>, StoreError> {
        let pk = claim_pk(namespace);
        let out = self
            .client
            .put_item()
            .table_name(&self.tables.members)
            .set_item(Some(key(("pk", &pk), Some(("sk", CLAIM_SK)))))
            .item("source_id", AttributeValue::S(source_id.to_string()))
            .condition_expression("attribute_not_exists(pk) OR source_id = :s")
            .expression_attribute_values(":s", AttributeValue::S(source_id.to_string()))
            .send()
            .await;
        match out {
            Ok(_) => Ok(None),
            Err(e) if put_condition_failed(&e) => {
                let holder = self
                    .client
                    .get_item()
                    .table_name(&self.tables.members)
                    .set_key(Some(key(("pk", &pk), Some(("sk", CLAIM_SK)))))
                    .consistent_read(true)
                    .send()
                    .await
                    .map_err(sdk("reading a member namespace's claim"))?
                    .item
                    .and_then(|i| s(&i, "source_id"));
                match holder {
                    Some(holder) => Ok(Some(holder)),
                    // Released between the two calls: try again.
                    None => self.claim_member_namespace(namespace, source_id).await,
                }
            }
            Err(e) => Err(sdk("claiming a member namespace")(e)),
        }
    }

    async fn release_member_namespace(&self, namespace: &str, source_id: &str) -> Result<(), StoreError> {
        let out = self
            .client
            .delete_item()
            .table_name(&self.tables.members)
            .set_key(Some(key(("pk", &claim_pk(namespace)), Some(("sk", CLAIM_SK)))))
            .condition_expression("source_id = :s")
            .expression_attribute_values(":s", AttributeValue::S(source_id.to_string()))
            .send()
            .await;
        match out {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_conditional_check_failed_exception()) =>
            {
                Ok(())
            }
            Err(e) => Err(sdk("releasing a member namespace")(e)),
        }
    }

    async fn get_source(&self, id: &str) -> Result<Option<SourceState>, StoreError> {
        self.get_item_consistent(id)
            .await?
            .map(|item| Self::state(&item))
            .transpose()
    }

    async fn list_sources(&self) -> Result<Vec<SourceState>, StoreError> {
        let mut sources = self
            .scan_sources(None, "listing sources")
            .await?
            .iter()
            .map(Self::state)
            .collect::<Result<Vec<_>, _>>()?;
        sources.sort_by(|a, b| a.config.id.cmp(&b.config.id));
        Ok(sources)
    }

    async fn delete_source(&self, id: &str, purge_records: bool) -> Result<u64, StoreError> {
        let mut purged = 0;
        if purge_records {
            let (items, _) = self.query_all(&self.tables.records, ("source_id", id), false).await?;
            let deletes: Vec<WriteRequest> = items
                .iter()
                .filter_map(|i| s(i, "record_key"))
                .map(|k| {
                    let delete = DeleteRequest::builder()
                        .set_key(Some(key(("source_id", id), Some(("record_key", &k)))))
                        .build()
                        .expect("key set");
                    WriteRequest::builder().delete_request(delete).build()
                })
                .collect();
            purged = deletes.len() as u64;
            self.batch_write(&self.tables.records, deletes).await?;
        }
        self.client
            .delete_item()
            .table_name(&self.tables.sources)
            .set_key(Some(key(("source_id", id), None)))
            .send()
            .await
            .map_err(sdk("deleting a source"))?;
        Ok(purged)
    }

    async fn acquire_lease(
        &self,
        id: &str,
        token: &str,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Result<LeaseOutcome, StoreError> {
        let out = self
            .client
            .update_item()
            .table_name(&self.tables.sources)
            .set_key(Some(key(("source_id", id), None)))
            .update_expression("SET lease_token = :t, lease_expires_us = :e")
            .condition_expression(
                "attribute_exists(source_id) AND (attribute_not_exists(lease_expires_us) OR lease_expires_us <= :now OR lease_token = :t)",
            )
            .expression_attribute_values(":t", AttributeValue::S(token.to_string()))
            .expression_attribute_values(":e", num(to_micros(expires_at)))
            .expression_attribute_values(":now", num(to_micros(now)))
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        match out {
            Ok(out) => Ok(LeaseOutcome::Acquired(Box::new(Self::state(
                &out.attributes.unwrap_or_default(),
            )?))),
            Err(e) if is_condition_failed(&e) => Ok(match self.get_source(id).await? {
                None => LeaseOutcome::NotFound,
                Some(state) => LeaseOutcome::Held {
                    expires_at: state.lease.map_or(now, |l| l.expires_at),
                },
            }),
            Err(e) => Err(sdk("taking the lease")(e)),
        }
    }

    async fn release_lease(&self, id: &str, token: &str) -> Result<(), StoreError> {
        let out = self
            .client
            .update_item()
            .table_name(&self.tables.sources)
            .set_key(Some(key(("source_id", id), None)))
            .update_expression("REMOVE lease_token, lease_expires_us")
            .condition_expression("lease_token = :t")
            .expression_attribute_values(":t", AttributeValue::S(token.to_string()))
            .send()
            .await;
        match out {
            Ok(_) => Ok(()),
            Err(e) if is_condition_failed(&e) => Ok(()),
            Err(e) => Err(sdk("releasing the lease")(e)),
        }
    }

    async fn renew_lease(&self, id: &str, token: &str, expires_at: DateTime<Utc>) -> Result<(), StoreError> {
        let out = self
            .client
            .update_item()
            .table_name(&self.tables.sources)
            .set_key(Some(key(("source_id", id), None)))
            .update_expression("SET lease_expires_us = :e")
            .condition_expression("lease_token = :t")
            .expression_attribute_values(":t", AttributeValue::S(token.to_string()))
            .expression_attribute_values(":e", num(to_micros(expires_at)))
            .send()
            .await;
        match out {
            Ok(_) => Ok(()),
            Err(e) if is_condition_failed(&e) => Err(StoreError::LeaseLost {
                source_id: id.to_string(),
            }),
            Err(e) => Err(sdk("renewing the lease")(e)),
        }
    }

    async fn advance_watermark(&self, id: &str, token: &str, watermark: DateTime<Utc>) -> Result<(), StoreError> {
        let out = self
            .client
            .update_item()
            .table_name(&self.tables.sources)
            .set_key(Some(key(("source_id", id), None)))
            .update_expression("SET watermark_us = :w")
            .condition_expression("lease_token = :t AND (attribute_not_exists(watermark_us) OR watermark_us <= :w)")
            .expression_attribute_values(":t", AttributeValue::S(token.to_string()))
            .expression_attribute_values(":w", num(to_micros(watermark)))
            .send()
            .await;
        match out {
            Ok(_) => Ok(()),
            Err(e) if is_condition_failed(&e) => {
                // Either the lease is gone, or the watermark is already later: fine.
                let state = self.get_source(id).await?;
                match state.and_then(|s| s.lease) {
                    Some(lease) if lease.token == token => Ok(()),
                    _ => Err(StoreError::LeaseLost {
                        source_id: id.to_string(),
                    }),
                }
            }
            Err(e) => Err(sdk("moving the watermark")(e)),
        }
    }

    async fn record_ssh_host_key(&self, id: &str, key_line: &str) -> Result<(), StoreError> {
        let update = self
            .client
            .update_item()
            .table_name(&self.tables.sources)
            .set_key(Some(key(("source_id", id), None)))
            .condition_expression("attribute_exists(source_id)")
            .update_expression("SET ssh_host_key = :k")
            .expression_attribute_values(":k", AttributeValue::S(key_line.to_string()));
        match update.send().await {
            Ok(_) => Ok(()),
            Err(e) if is_condition_failed(&e) => Ok(()),
            Err(e) => Err(sdk("recording the SSH host key")(e)),
        }
    }

    async fn set_narrowed_window(&self, id: &str, seconds: Option<i64>) -> Result<(), StoreError> {
        let update = self
            .client
            .update_item()
            .table_name(&self.tables.sources)
            .set_key(Some(key(("source_id", id), None)))
            .condition_expression("attribute_exists(source_id)");
        let update = match seconds {
            Some(s) => update
                .update_expression("SET narrowed_window_s = :s")
                .expression_attribute_values(":s", num(s)),
            None => update.update_expression("REMOVE narrowed_window_s"),
        };
        match update.send().await {
            Ok(_) => Ok(()),
            Err(e) if is_condition_failed(&e) => Ok(()),
            Err(e) => Err(sdk("saving the narrowed window")(e)),
        }
    }

    async fn set_cadence(&self, id: &str, cadence: Cadence) -> Result<(), StoreError> {
        let out = self
            .client
            .update_item()
            .table_name(&self.tables.sources)
            .set_key(Some(key(("source_id", id), None)))
            .update_expression("SET effective_minutes = :e, fast_runs = :f")
            .condition_expression("attribute_exists(source_id)")
            .expression_attribute_values(":e", num(cadence.effective_minutes.into()))
            .expression_attribute_values(":f", num(cadence.fast_runs.into()))
            .send()
            .await;
        match out {
            Ok(_) => Ok(()),
            // Deleted meanwhile: nothing to keep.
            Err(e) if is_condition_failed(&e) => Ok(()),
            Err(e) => Err(sdk("saving the schedule's cadence")(e)),
        }
    }
}

#[async_trait]
impl RecordWriter for DynamoStore {
    async fn write_records(
        &self,
        source_id: &str,
        batch: RecordBatch,
        check_unchanged: bool,
    ) -> Result<WriteStats, StoreError> {
        let mut records = batch.into_records();
        let mut stats = WriteStats::default();
        if check_unchanged {
            let stored = self.stored_hashes(source_id, &records).await?;
            records.retain(|r| {
                let same = stored
                    .get(&r.key)
                    .is_some_and(|h| u128::from_str_radix(h, 16) == Ok(r.hash));
                stats.unchanged += same as u64;
                !same
            });
        }
        let refused = self
            .write_each(&self.tables.records, &records, |r| {
                let put = PutRequest::builder()
                    .set_item(Some(Self::record_item(source_id, r)))
                    .build()
                    .expect("item set");
                WriteRequest::builder().put_request(put).build()
            })
            .await?;
        stats.written = (records.len() - refused.len()) as u64;
        stats.rejects = refused
            .into_iter()
            .map(|(i, reason)| Reject {
                reference: Some(records[i].key.clone()),
                reason: format!("DynamoDB refused the record: {reason}"),
            })
            .collect();
        Ok(stats)
    }

    async fn upsert_members(&self, member_id_source: &str, members: Vec<Member>) -> Result<(), StoreError> {
        let member_pk = format!("member#{member_id_source}");
        let team_pk = format!("team#{member_id_source}");
        let mut seen = HashSet::new();
        let mut items: Vec<Item> = Vec::new();
        for m in &members {
            if seen.insert((member_pk.as_str(), m.member_id.clone())) {
                let mut item = key(("pk", &member_pk), Some(("sk", &m.member_id)));
                item.insert("name".into(), AttributeValue::S(m.name.clone()));
                if let Some(team) = &m.team {
                    item.insert("team".into(), AttributeValue::S(team.clone()));
                }
                items.push(item);
            }
            if let Some(team) = &m.team
                && seen.insert((team_pk.as_str(), team.clone()))
            {
                items.push(key(("pk", &team_pk), Some(("sk", team))));
            }
        }
        let refused = self
            .write_each(&self.tables.members, &items, |item| {
                let put = PutRequest::builder()
                    .set_item(Some(item.clone()))
                    .build()
                    .expect("item set");
                WriteRequest::builder().put_request(put).build()
            })
            .await?;
        // Their rows are written; a member or team DynamoDB refuses (mapping checks
        // their limits, so this is one it did not foresee) is logged, not a reason to
        // stop the source.
        for (i, reason) in refused {
            let sk = s(&items[i], "sk").unwrap_or_default();
            tracing::warn!(member_or_team = %sluice_core::mapping::cut(&sk, 256), %reason, "DynamoDB refused a member or team item");
        }
        Ok(())
    }
}

#[async_trait]
impl RunLog for DynamoStore {
    async fn put_run(&self, run: &Run) -> Result<(), StoreError> {
        let status = serde_json::to_value(run.status).expect("status serializes");
        self.client
            .put_item()
            .table_name(&self.tables.runs)
            .item("source_id", AttributeValue::S(run.source_id.clone()))
            .item("run_id", AttributeValue::S(run.id.clone()))
            .item(
                "status",
                AttributeValue::S(status.as_str().unwrap_or_default().to_string()),
            )
            .item("started_at", AttributeValue::S(Value::iso_timestamp(&run.started_at)))
            .item("expires_at", num(run.expires_at().timestamp()))
            .item("body", AttributeValue::S(encode_run(run)))
            .send()
            .await
            .map_err(sdk("writing the run log"))?;
        Ok(())
    }

    async fn list_runs(&self, source_id: &str, limit: usize, before: Option<&str>) -> Result<Vec<Run>, StoreError> {
        let mut q = self
            .client
            .query()
            .table_name(&self.tables.runs)
            .expression_attribute_values(":s", AttributeValue::S(source_id.to_string()))
            .scan_index_forward(false)
            .limit(limit.clamp(1, 1000) as i32);
        q = match before {
            Some(b) => q
                .key_condition_expression("source_id = :s AND run_id < :b")
                .expression_attribute_values(":b", AttributeValue::S(b.to_string())),
            None => q.key_condition_expression("source_id = :s"),
        };
        let out = q.send().await.map_err(sdk("reading run logs"))?;
        out.items().iter().map(|item| run_body(source_id, item)).collect()
    }

    async fn get_run(&self, source_id: &str, run_id: &str) -> Result<Option<Run>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.tables.runs)
            .set_key(Some(key(("source_id", source_id), Some(("run_id", run_id)))))
            .send()
            .await
            .map_err(sdk("reading a run"))?;
        out.item.as_ref().map(|item| run_body(source_id, item)).transpose()
    }
}

#[async_trait]
impl BackfillJobs for DynamoStore {
    async fn create_backfill(&self, job: &Backfill) -> Result<BackfillCreated, StoreError> {
        let mut item = key(("source_id", &backfill_pk(&job.source_id)), Some(("run_id", &job.id)));
        item.insert("body".into(), AttributeValue::S(encode_job(job)));
        item.insert("status".into(), AttributeValue::S(job_status(job).into()));
        item.insert("version".into(), num(job.version as i64));
        let put = Put::builder()
            .table_name(&self.tables.runs)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(run_id)")
            .build()
            .expect("complete");
        let claim = Update::builder()
            .table_name(&self.tables.sources)
            .set_key(Some(key(("source_id", &job.source_id), None)))
            .update_expression("SET active_backfill = :j")
            .condition_expression("attribute_exists(source_id) AND attribute_not_exists(active_backfill)")
            .expression_attribute_values(":j", AttributeValue::S(job.id.clone()))
            .build()
            .expect("complete");
        let out = self
            .client
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().put(put).build())
            .transact_items(TransactWriteItem::builder().update(claim).build())
            .send()
            .await;
        match out {
            Ok(_) => Ok(BackfillCreated::Created),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_transaction_canceled_exception()) =>
            {
                Ok(match self.get_source(&job.source_id).await? {
                    None => BackfillCreated::SourceNotFound,
                    Some(state) => BackfillCreated::Conflict {
                        existing: state.active_backfill.unwrap_or_default(),
                    },
                })
            }
            Err(e) => Err(sdk("creating a backfill")(e)),
        }
    }

    async fn get_backfill(&self, source_id: &str, job_id: &str) -> Result<Option<Backfill>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.tables.runs)
            .set_key(Some(key(
                ("source_id", &backfill_pk(source_id)),
                Some(("run_id", job_id)),
            )))
            .consistent_read(true)
            .send()
            .await
            .map_err(sdk("reading a backfill"))?;
        out.item.as_ref().map(Self::backfill).transpose()
    }

    async fn list_backfills(&self, source_id: &str, limit: usize) -> Result<Vec<Backfill>, StoreError> {
        let out = self
            .client
            .query()
            .table_name(&self.tables.runs)
            .key_condition_expression("source_id = :s")
            .expression_attribute_values(":s", AttributeValue::S(backfill_pk(source_id)))
            .scan_index_forward(false)
            .limit(limit.clamp(1, 1000) as i32)
            .send()
            .await
            .map_err(sdk("reading backfills"))?;
        out.items().iter().map(Self::backfill).collect()
    }

    async fn save_backfill(&self, job: &mut Backfill) -> Result<SaveOutcome, StoreError> {
        let update = self.backfill_update(job);
        let saved = if job.is_active() {
            match self
                .client
                .update_item()
                .table_name(update.table_name())
                .set_key(Some(update.key().clone()))
                .update_expression(update.update_expression())
                .set_condition_expression(update.condition_expression().map(str::to_string))
                .set_expression_attribute_names(update.expression_attribute_names().cloned())
                .set_expression_attribute_values(update.expression_attribute_values().cloned())
                .send()
                .await
            {
                Ok(_) => true,
                Err(e) if is_condition_failed(&e) => false,
                Err(e) => return Err(sdk("saving a backfill")(e)),
            }
        } else {
            // The job and its source's slot change together.
            let free = Update::builder()
                .table_name(&self.tables.sources)
                .set_key(Some(key(("source_id", &job.source_id), None)))
                .update_expression("REMOVE active_backfill")
                .condition_expression("attribute_not_exists(active_backfill) OR active_backfill = :j")
                .expression_attribute_values(":j", AttributeValue::S(job.id.clone()))
                .build()
                .expect("complete");
            match self
                .client
                .transact_write_items()
                .transact_items(TransactWriteItem::builder().update(update).build())
                .transact_items(TransactWriteItem::builder().update(free).build())
                .send()
                .await
            {
                Ok(_) => true,
                Err(e)
                    if e.as_service_error()
                        .is_some_and(|s| s.is_transaction_canceled_exception()) =>
                {
                    false
                }
                Err(e) => return Err(sdk("finishing a backfill")(e)),
            }
        };
        if !saved {
            return Ok(SaveOutcome::Stale);
        }
        job.version += 1;
        Ok(SaveOutcome::Saved)
    }

    async fn request_backfill_cancel(
        &self,
        source_id: &str,
        job_id: &str,
        at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let out = self
            .client
            .update_item()
            .table_name(&self.tables.runs)
            .set_key(Some(key(
                ("source_id", &backfill_pk(source_id)),
                Some(("run_id", job_id)),
            )))
            .update_expression("SET cancel_requested_us = if_not_exists(cancel_requested_us, :at)")
            .condition_expression("attribute_exists(run_id)")
            .expression_attribute_values(":at", num(to_micros(at)))
            .send()
            .await;
        match out {
            Ok(_) => Ok(true),
            Err(e) if is_condition_failed(&e) => Ok(false),
            Err(e) => Err(sdk("cancelling a backfill")(e)),
        }
    }

    async fn active_backfills(&self) -> Result<Vec<(String, String)>, StoreError> {
        let items = self
            .scan_sources(Some("attribute_exists(active_backfill)"), "listing active backfills")
            .await?;
        Ok(items
            .iter()
            .filter_map(|item| Some((s(item, "source_id")?, s(item, "active_backfill")?)))
            .collect())
    }
}

#[async_trait]
impl RecordReader for DynamoStore {
    async fn get_record(&self, source_id: &str, record_key: &str) -> Result<Option<StoredRecord>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.tables.records)
            .set_key(Some(key(("source_id", source_id), Some(("record_key", record_key)))))
            .consistent_read(true)
            .send()
            .await
            .map_err(sdk("reading a record"))?;
        Ok(out.item.as_ref().map(stored_record))
    }

    async fn count_records(&self, source_id: &str) -> Result<u64, StoreError> {
        Ok(self
            .query_all(&self.tables.records, ("source_id", source_id), true)
            .await?
            .1)
    }

    async fn list_members(&self, member_id_source: &str) -> Result<(Vec<Member>, Vec<String>), StoreError> {
        let (items, _) = self
            .query_all(
                &self.tables.members,
                ("pk", &format!("member#{member_id_source}")),
                false,
            )
            .await?;
        let members = items
            .iter()
            .map(|i| Member {
                member_id: s(i, "sk").unwrap_or_default(),
                name: s(i, "name").unwrap_or_default(),
                team: s(i, "team"),
            })
            .collect();
        let (items, _) = self
            .query_all(&self.tables.members, ("pk", &format!("team#{member_id_source}")), false)
            .await?;
        Ok((members, items.iter().filter_map(|i| s(i, "sk")).collect()))
    }
}

#[async_trait]
impl DeliveryLog for DynamoStore {
    async fn put_deliveries(&self, source_id: &str, states: &[DeliveryState]) -> Result<(), StoreError> {
        let pk = delivery_pk(source_id);
        let requests = states
            .iter()
            .map(|state| {
                let mut item = key(("source_id", &pk), Some(("run_id", &state.record_key)));
                item.insert(
                    "body".into(),
                    AttributeValue::S(serde_json::to_string(state).expect("states serialize")),
                );
                item.insert("status".into(), AttributeValue::S(state.status.as_str().into()));
                item.insert("hash".into(), AttributeValue::S(state.hash.clone()));
                if let (DeliveryStatus::Waiting, Some(at)) = (state.status, state.next_attempt_at) {
                    item.insert(PARKED_SOURCE.into(), AttributeValue::S(pk.clone()));
                    item.insert(PARKED_AT.into(), num(to_micros(at)));
                }
                let expires = state.updated_at + chrono::Duration::days(sluice_core::run::RUN_RETENTION_DAYS);
                item.insert("expires_at".into(), num(expires.timestamp()));
                let put = PutRequest::builder().set_item(Some(item)).build().expect("item set");
                WriteRequest::builder().put_request(put).build()
            })
            .collect();
        self.batch_write(&self.tables.runs, requests).await
    }

    async fn list_deliveries(
        &self,
        source_id: &str,
        status: Option<DeliveryStatus>,
        limit: usize,
        after: Option<&str>,
    ) -> Result<Vec<DeliveryState>, StoreError> {
        let pk = delivery_pk(source_id);
        let mut states = Vec::new();
        let mut start = after.map(|a| key(("source_id", &pk), Some(("run_id", a))));
        loop {
            let mut q = self
                .client
                .query()
                .table_name(&self.tables.runs)
                .key_condition_expression("source_id = :pk")
                .expression_attribute_values(":pk", AttributeValue::S(pk.clone()))
                .set_exclusive_start_key(start.take());
            if let Some(status) = status {
                q = q
                    .filter_expression("#st = :st")
                    .expression_attribute_names("#st", "status")
                    .expression_attribute_values(":st", AttributeValue::S(status.as_str().into()));
            }
            let out = q.send().await.map_err(sdk("reading delivery states"))?;
            for item in out.items() {
                let body = s(item, "body").unwrap_or_default();
                states.push(serde_json::from_str(&body).map_err(|e| StoreError::Corrupt {
                    what: format!("a delivery state of {source_id}"),
                    reason: e.to_string(),
                })?);
                if states.len() == limit {
                    return Ok(states);
                }
            }
            match out.last_evaluated_key {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => return Ok(states),
            }
        }
    }

    async fn undelivered(
        &self,
        source_id: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<StoredRecord>, StoreError> {
        // The stream delivers in AWS; this serves a delivery from the CLI, reading the
        // source's records and states once.
        let (states, _) = self
            .query_all(&self.tables.runs, ("source_id", &delivery_pk(source_id)), false)
            .await?;
        let sent: HashMap<String, String> = states
            .iter()
            .filter(|i| s(i, "status").as_deref() != Some(DeliveryStatus::Waiting.as_str()))
            .filter_map(|i| Some((s(i, "run_id")?, s(i, "hash")?)))
            .collect();
        let (records, _) = self
            .query_all(&self.tables.records, ("source_id", source_id), false)
            .await?;
        Ok(records
            .iter()
            .map(stored_record)
            .filter(|r| after.is_none_or(|a| r.key.as_str() > a) && sent.get(&r.key) != Some(&r.hash))
            .take(limit)
            .collect())
    }

    async fn parked(
        &self,
        source_id: &str,
        due_by: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<DeliveryState>, StoreError> {
        let mut states = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let out = self
                .client
                .query()
                .table_name(&self.tables.runs)
                .index_name(PARKED_INDEX)
                .key_condition_expression("#ps = :pk AND #at <= :due")
                .expression_attribute_names("#ps", PARKED_SOURCE)
                .expression_attribute_names("#at", PARKED_AT)
                .expression_attribute_values(":pk", AttributeValue::S(delivery_pk(source_id)))
                .expression_attribute_values(":due", num(to_micros(due_by)))
                .limit(limit.clamp(1, 1_000) as i32)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(sdk("reading parked calls"))?;
            for item in out.items() {
                let body = s(item, "body").unwrap_or_default();
                states.push(serde_json::from_str(&body).map_err(|e| StoreError::Corrupt {
                    what: format!("a delivery state of {source_id}"),
                    reason: e.to_string(),
                })?);
                if states.len() == limit {
                    return Ok(states);
                }
            }
            match out.last_evaluated_key {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => return Ok(states),
            }
        }
    }
}

impl DynamoStore {
    /// Puts `connection` when `condition` holds; `false` when it does not.
    async fn put_connection(
        &self,
        connection: &Connection,
        condition: &str,
        what: &'static str,
    ) -> Result<bool, StoreError> {
        let out = self
            .client
            .put_item()
            .table_name(&self.tables.members)
            .set_item(Some(key(("pk", CONNECTIONS_PK), Some(("sk", &connection.id)))))
            .item("body", AttributeValue::S(connection.encode()))
            .condition_expression(condition)
            .send()
            .await;
        match out {
            Ok(_) => Ok(true),
            Err(e) if put_condition_failed(&e) => Ok(false),
            Err(e) => Err(sdk(what)(e)),
        }
    }
}

#[async_trait]
impl ConnectionStore for DynamoStore {
    async fn create_connection(&self, connection: &Connection) -> Result<bool, StoreError> {
        self.put_connection(connection, "attribute_not_exists(pk)", "creating a connection")
            .await
    }

    async fn update_connection(&self, connection: &Connection) -> Result<bool, StoreError> {
        self.put_connection(connection, "attribute_exists(pk)", "saving a connection")
            .await
    }

    async fn get_connection(&self, id: &str) -> Result<Option<Connection>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.tables.members)
            .set_key(Some(key(("pk", CONNECTIONS_PK), Some(("sk", id)))))
            .consistent_read(true)
            .send()
            .await
            .map_err(sdk("reading a connection"))?;
        out.item
            .map(|item| Connection::decode(id, &s(&item, "body").unwrap_or_default()))
            .transpose()
    }

    async fn list_connections(&self) -> Result<Vec<Connection>, StoreError> {
        let (items, _) = self
            .query_all(&self.tables.members, ("pk", CONNECTIONS_PK), false)
            .await?;
        // The query returns them in sort-key order: by id.
        items
            .iter()
            .map(|item| Connection::decode(&s(item, "sk").unwrap_or_default(), &s(item, "body").unwrap_or_default()))
            .collect()
    }

    async fn delete_connection(&self, id: &str) -> Result<(), StoreError> {
        self.client
            .delete_item()
            .table_name(&self.tables.members)
            .set_key(Some(key(("pk", CONNECTIONS_PK), Some(("sk", id)))))
            .send()
            .await
            .map_err(sdk("deleting a connection"))?;
        Ok(())
    }
}
