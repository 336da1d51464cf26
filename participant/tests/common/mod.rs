//! The fake coordinator the participant's tests run the real agent against, on a loopback
//! port: it answers the challenge and registration of federation `fed` (session `[1]`, name
//! `h0`) and leaves tasks, uploads and declines to each test's [`Script`].

use std::pin::Pin;

use fedledger_proto as pb;
use futures::Stream;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status, Streaming};

pub type TaskStream = Pin<Box<dyn Stream<Item = Result<pb::TaskMessage, Status>> + Send>>;

/// What one test's coordinator does beyond registration. Calls a test does not expect are
/// refused as unimplemented.
#[tonic::async_trait]
pub trait Script: Send + Sync + 'static {
    async fn get_task(&self, req: Request<pb::TaskRequest>)
    -> Result<Response<TaskStream>, Status>;

    async fn submit_update(
        &self,
        req: Request<Streaming<pb::UpdateMessage>>,
    ) -> Result<Response<pb::SubmitReceipt>, Status>;

    async fn decline(
        &self,
        _req: Request<pb::DeclineRequest>,
    ) -> Result<Response<pb::DeclineReceipt>, Status> {
        Err(Status::unimplemented("not expected here"))
    }
}

/// The gRPC service around a [`Script`].
pub struct Fake<S>(pub S);

#[tonic::async_trait]
impl<S: Script> pb::coordinator_server::Coordinator for Fake<S> {
    async fn challenge(
        &self,
        _req: Request<pb::ChallengeRequest>,
    ) -> Result<Response<pb::ChallengeResponse>, Status> {
        Ok(Response::new(pb::ChallengeResponse {
            federation: "fed".into(),
            challenge: vec![7; 32],
            expires_unix_ms: u64::MAX,
        }))
    }

    async fn register(
        &self,
        _req: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::RegisterResponse>, Status> {
        Ok(Response::new(pb::RegisterResponse {
            session: vec![1],
            name: "h0".into(),
            federation: "fed".into(),
        }))
    }

    type GetTaskStream = TaskStream;

    async fn get_task(
        &self,
        req: Request<pb::TaskRequest>,
    ) -> Result<Response<TaskStream>, Status> {
        self.0.get_task(req).await
    }

    async fn submit_update(
        &self,
        req: Request<Streaming<pb::UpdateMessage>>,
    ) -> Result<Response<pb::SubmitReceipt>, Status> {
        self.0.submit_update(req).await
    }

    async fn decline(
        &self,
        req: Request<pb::DeclineRequest>,
    ) -> Result<Response<pb::DeclineReceipt>, Status> {
        self.0.decline(req).await
    }

    async fn get_round_result(
        &self,
        _req: Request<pb::RoundResultRequest>,
    ) -> Result<Response<pb::RoundResult>, Status> {
        Err(Status::unimplemented("not expected here"))
    }

    async fn submit_proposal(
        &self,
        _req: Request<pb::ProposalRequest>,
    ) -> Result<Response<pb::ProposalReceipt>, Status> {
        Err(Status::unimplemented("not expected here"))
    }

    async fn list_proposals(
        &self,
        _req: Request<pb::ListProposalsRequest>,
    ) -> Result<Response<pb::ProposalList>, Status> {
        Err(Status::unimplemented("not expected here"))
    }

    type GetCandidatesStream =
        futures::stream::BoxStream<'static, Result<pb::CandidatesMessage, Status>>;

    async fn get_candidates(
        &self,
        _req: Request<pb::CandidatesRequest>,
    ) -> Result<Response<Self::GetCandidatesStream>, Status> {
        Err(Status::unimplemented("not expected here"))
    }

    async fn submit_utilities(
        &self,
        _req: Request<pb::UtilitiesRequest>,
    ) -> Result<Response<pb::UtilitiesReceipt>, Status> {
        Err(Status::unimplemented("not expected here"))
    }
}

/// Serves `script` on a free loopback port until the test ends; its `http://` address.
pub async fn serve<S: Script>(script: S) -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(pb::coordinator_server::CoordinatorServer::new(Fake(script)))
            .serve_with_incoming(TcpListenerStream::new(listener))
            .await;
    });
    (format!("http://{addr}"), server)
}
