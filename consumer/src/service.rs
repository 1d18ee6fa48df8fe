//! `pushpull.v1.ConsumerService`: the consumer's counters over gRPC.

use pushpull::pb::{self, consumer_service_server::ConsumerService};
use tonic::{Request, Response, Status};

use crate::stats::Stats;

/// Serves [`Stats`] snapshots.
#[derive(Debug, Clone)]
pub struct ConsumerApi {
    stats: Stats,
}

impl ConsumerApi {
    pub fn new(stats: Stats) -> Self {
        Self { stats }
    }
}

#[tonic::async_trait]
impl ConsumerService for ConsumerApi {
    async fn get_stats(
        &self,
        _request: Request<pb::GetStatsRequest>,
    ) -> Result<Response<pb::GetStatsResponse>, Status> {
        Ok(Response::new(self.stats.snapshot()))
    }
}
