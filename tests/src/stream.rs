//! The Records table's DynamoDB stream on moto, read as Lambda reads it: each call of
//! [`RecordsStream::next_event`] is the event Lambda would invoke the deliver function
//! with, in Lambda's JSON (`{"Records": [{"eventName", "dynamodb": {...}}]}`).

use aws_sdk_dynamodbstreams::types::{AttributeValue, ShardIteratorType};
use base64::Engine as _;
use serde_json::{Map, Value as Json, json};

pub struct RecordsStream {
    client: aws_sdk_dynamodbstreams::Client,
    iterators: Vec<String>,
}

impl RecordsStream {
    /// The stream of `table`, from its start.
    pub async fn open(sdk: &aws_config::SdkConfig, table: &str) -> Self {
        let arn = aws_sdk_dynamodb::Client::new(sdk)
            .describe_table()
            .table_name(table)
            .send()
            .await
            .unwrap()
            .table
            .and_then(|t| t.latest_stream_arn)
            .expect("the Records table has a stream");
        let client = aws_sdk_dynamodbstreams::Client::new(sdk);
        let stream = client
            .describe_stream()
            .stream_arn(&arn)
            .send()
            .await
            .unwrap()
            .stream_description
            .unwrap();
        let mut iterators = Vec::new();
        for shard in stream.shards() {
            let iterator = client
                .get_shard_iterator()
                .stream_arn(&arn)
                .shard_id(shard.shard_id().unwrap())
                .shard_iterator_type(ShardIteratorType::TrimHorizon)
                .send()
                .await
                .unwrap()
                .shard_iterator
                .unwrap();
            iterators.push(iterator);
        }
        RecordsStream { client, iterators }
    }

    /// The records written since the last call, as one Lambda event.
    pub async fn next_event(&mut self) -> Json {
        let mut records = Vec::new();
        for iterator in &mut self.iterators {
            let out = self
                .client
                .get_records()
                .shard_iterator(iterator.as_str())
                .send()
                .await
                .unwrap();
            for r in out.records() {
                let data = r.dynamodb().unwrap();
                let mut dynamodb = json!({
                    "SequenceNumber": data.sequence_number().unwrap(),
                    "Keys": image(data.keys().unwrap()),
                    "StreamViewType": "NEW_IMAGE",
                });
                if let Some(new) = data.new_image() {
                    dynamodb["NewImage"] = image(new);
                }
                if let Some(at) = data.approximate_creation_date_time() {
                    dynamodb["ApproximateCreationDateTime"] = json!(at.secs());
                }
                records.push(json!({
                    "eventID": r.event_id(),
                    "eventName": r.event_name().unwrap().as_str(),
                    "eventSource": "aws:dynamodb",
                    "awsRegion": "us-east-1",
                    "dynamodb": dynamodb,
                }));
            }
            if let Some(next) = out.next_shard_iterator {
                *iterator = next;
            }
        }
        json!({ "Records": records })
    }
}

fn image(item: &std::collections::HashMap<String, AttributeValue>) -> Json {
    Json::Object(item.iter().map(|(k, v)| (k.clone(), wire(v))).collect::<Map<_, _>>())
}

/// An attribute in DynamoDB's JSON form, as Lambda's stream events carry it.
fn wire(v: &AttributeValue) -> Json {
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    match v {
        AttributeValue::S(s) => json!({ "S": s }),
        AttributeValue::N(n) => json!({ "N": n }),
        AttributeValue::Bool(b) => json!({ "BOOL": b }),
        AttributeValue::Null(_) => json!({ "NULL": true }),
        AttributeValue::B(b) => json!({ "B": b64(b.as_ref()) }),
        AttributeValue::L(l) => json!({ "L": l.iter().map(wire).collect::<Vec<_>>() }),
        AttributeValue::M(m) => json!({ "M": image(m) }),
        AttributeValue::Ss(s) => json!({ "SS": s }),
        AttributeValue::Ns(n) => json!({ "NS": n }),
        AttributeValue::Bs(b) => json!({ "BS": b.iter().map(|b| b64(b.as_ref())).collect::<Vec<_>>() }),
        other => panic!("an attribute type the tests do not expect: {other:?}"),
    }
}
