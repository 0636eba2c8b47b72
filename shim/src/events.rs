//! Task events on their way to containerd: queued in the order they happen and sent by one
//! task, each with a deadline, so an unresponsive containerd costs an event, never the shim.

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use containerd_shim::{
    event::Event,
    protos::{
        protobuf::MessageDyn,
        shim::{event::Envelope, events::ForwardRequest},
        shim_async::{Client, EventsClient},
        ttrpc,
    },
    util::{connect, convert_to_any, timestamp},
};
use log::{debug, warn};
use tokio::sync::mpsc;

/// How long one event may take to reach containerd (runc's shim allows the same).
pub const DEADLINE: Duration = Duration::from_secs(5);

/// Where events go: containerd's event service, or a test's channel.
#[async_trait]
pub trait Publish: Send + Sync + 'static {
    async fn publish(&self, topic: &str, event: Box<dyn MessageDyn>) -> Result<(), String>;
}

/// The sending end, cheap to clone; `send` never waits.
#[derive(Clone)]
pub struct EventSender {
    queue: mpsc::UnboundedSender<(String, Box<dyn MessageDyn>)>,
}

impl EventSender {
    /// Starts the one task that publishes, in order, each within `deadline`.
    pub fn new(publisher: impl Publish, deadline: Duration) -> EventSender {
        let (queue, mut queued) = mpsc::unbounded_channel::<(String, Box<dyn MessageDyn>)>();
        tokio::spawn(async move {
            while let Some((topic, event)) = queued.recv().await {
                debug!("publish {topic}");
                match tokio::time::timeout(deadline, publisher.publish(&topic, event)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => warn!("publish {topic}: {e}"),
                    Err(_) => warn!("publish {topic}: containerd did not take it within {deadline:?}; dropped"),
                }
            }
        });
        EventSender { queue }
    }

    pub fn send(&self, event: impl Event + 'static) {
        let topic = event.topic();
        if self.queue.send((topic.clone(), Box::new(event))).is_err() {
            warn!("publish {topic}: the publisher has stopped");
        }
    }
}

/// containerd's event service over ttrpc, reconnected once when the connection was lost.
pub struct Containerd {
    address: String,
    namespace: String,
    client: tokio::sync::Mutex<Option<EventsClient>>,
}

impl Containerd {
    pub fn new(address: String, namespace: String) -> Self {
        Containerd { address, namespace, client: tokio::sync::Mutex::new(None) }
    }

    async fn connect(&self) -> Result<EventsClient, String> {
        let address = self.address.clone();
        let fd = tokio::task::spawn_blocking(move || connect(&address))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("connect to {}: {e}", self.address))?;
        // SAFETY: `connect` returned a connected unix socket that nothing else owns.
        Ok(EventsClient::new(unsafe { Client::from_raw_unix_socket_fd(fd) }))
    }
}

#[async_trait]
impl Publish for Containerd {
    async fn publish(&self, topic: &str, event: Box<dyn MessageDyn>) -> Result<(), String> {
        let mut envelope = Envelope::new();
        envelope.set_topic(topic.to_string());
        envelope.set_namespace(self.namespace.clone());
        envelope.set_timestamp(timestamp().map_err(|e| e.to_string())?);
        envelope.set_event(convert_to_any(event).map_err(|e| e.to_string())?);
        let mut request = ForwardRequest::new();
        request.set_envelope(envelope);
        let mut client = self.client.lock().await;
        for attempt in 0..2 {
            if client.is_none() {
                *client = Some(self.connect().await?);
            }
            let c = client.as_ref().unwrap();
            match c.forward(ttrpc::context::with_duration(DEADLINE), &request).await {
                Ok(_) => return Ok(()),
                Err(ttrpc::Error::RemoteClosed | ttrpc::Error::LocalClosed) if attempt == 0 => *client = None,
                Err(e) => return Err(e.to_string()),
            }
        }
        Err("containerd closed the connection".into())
    }
}

/// Shared so that tests can keep a handle on what they publish to.
#[async_trait]
impl<P: Publish> Publish for Arc<P> {
    async fn publish(&self, topic: &str, event: Box<dyn MessageDyn>) -> Result<(), String> {
        (**self).publish(topic, event).await
    }
}

#[cfg(test)]
pub mod testing {
    use super::*;

    /// Publishes into a channel, as the topic and the event's JSON-ish debug text.
    pub struct Channel(pub mpsc::UnboundedSender<(String, String)>);

    #[async_trait]
    impl Publish for Channel {
        async fn publish(&self, topic: &str, event: Box<dyn MessageDyn>) -> Result<(), String> {
            let _ = self.0.send((topic.to_string(), format!("{event:?}")));
            Ok(())
        }
    }

    pub fn channel() -> (EventSender, mpsc::UnboundedReceiver<(String, String)>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (EventSender::new(Channel(tx), DEADLINE), rx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use containerd_shim::protos::events::task::{TaskCreate, TaskStart};

    /// A containerd that takes the first event and never answers.
    struct Unresponsive(mpsc::UnboundedSender<String>);

    #[async_trait]
    impl Publish for Unresponsive {
        async fn publish(&self, topic: &str, _: Box<dyn MessageDyn>) -> Result<(), String> {
            let _ = self.0.send(topic.to_string());
            std::future::pending::<()>().await;
            Ok(())
        }
    }

    #[tokio::test]
    async fn an_unresponsive_containerd_costs_each_event_its_deadline_and_never_stalls_the_sender() {
        let (tx, mut tried) = mpsc::unbounded_channel();
        let events = EventSender::new(Unresponsive(tx), Duration::from_millis(50));
        let t = std::time::Instant::now();
        for _ in 0..100 {
            events.send(TaskStart::default());
        }
        assert!(t.elapsed() < Duration::from_millis(50), "send must not wait: {:?}", t.elapsed());
        // Each attempt gives up at the deadline and the next event is tried.
        assert_eq!(tried.recv().await.as_deref(), Some("/tasks/start"));
        assert_eq!(tried.recv().await.as_deref(), Some("/tasks/start"));
        assert!(t.elapsed() >= Duration::from_millis(50));
    }

    #[tokio::test]
    async fn events_arrive_in_the_order_they_were_sent() {
        let (events, mut rx) = testing::channel();
        events.send(TaskCreate::default());
        events.send(TaskStart::default());
        assert_eq!(rx.recv().await.unwrap().0, "/tasks/create");
        assert_eq!(rx.recv().await.unwrap().0, "/tasks/start");
    }
}
