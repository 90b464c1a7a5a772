//! `hookyard ctl event-types`: the event-type catalog (a JSON Schema per
//! event name pattern). The schema is given as JSON text (`--schema`) or
//! read from a file (`--schema-file`); an update changes only what is given
//! and writes back with the version read.

use clap::Subcommand;
use hookyard::v1::{
    CreateEventTypeRequest, DeleteEventTypeRequest, EventType, GetEventTypeRequest,
    ListEventTypesRequest, UpdateEventTypeRequest,
};

use super::{read, refused, render::Output, Admin};

#[derive(Debug, Subcommand)]
pub enum EventTypeCommand {
    List,
    /// One event type with its schema.
    Get {
        id: String,
    },
    Create {
        /// [A-Za-z0-9._-], 1-64 characters.
        #[arg(long)]
        id: String,
        /// An event name pattern, e.g. `order.*`.
        #[arg(long)]
        pattern: String,
        /// The JSON Schema as JSON text.
        #[arg(
            long,
            conflicts_with = "schema_file",
            required_unless_present = "schema_file"
        )]
        schema: Option<String>,
        /// A file holding the JSON Schema.
        #[arg(long)]
        schema_file: Option<std::path::PathBuf>,
        #[arg(long)]
        description: Option<String>,
    },
    /// Changes only the fields given.
    Update {
        id: String,
        #[arg(long)]
        pattern: Option<String>,
        #[arg(long, conflicts_with = "schema_file")]
        schema: Option<String>,
        #[arg(long)]
        schema_file: Option<std::path::PathBuf>,
        #[arg(long)]
        description: Option<String>,
    },
    Delete {
        id: String,
    },
}

pub(super) async fn run(
    out: &Output,
    admin: &mut Admin,
    c: EventTypeCommand,
) -> anyhow::Result<()> {
    let event_type = match c {
        EventTypeCommand::List => {
            let list = admin
                .list_event_types(ListEventTypesRequest {})
                .await
                .map_err(refused)?
                .into_inner();
            out.event_types(&list.event_types, false);
            return Ok(());
        }
        EventTypeCommand::Get { id } => admin.get_event_type(GetEventTypeRequest { id }).await,
        EventTypeCommand::Create {
            id,
            pattern,
            schema,
            schema_file,
            description,
        } => {
            let schema = schema_text(schema, schema_file)?.unwrap_or_default();
            admin
                .create_event_type(CreateEventTypeRequest {
                    event_type: Some(EventType {
                        id,
                        pattern,
                        schema,
                        description: description.unwrap_or_default(),
                        ..EventType::default()
                    }),
                })
                .await
        }
        EventTypeCommand::Update {
            id,
            pattern,
            schema,
            schema_file,
            description,
        } => {
            let mut t = admin
                .get_event_type(GetEventTypeRequest { id })
                .await
                .map_err(refused)?
                .into_inner();
            if let Some(pattern) = pattern {
                t.pattern = pattern;
            }
            if let Some(schema) = schema_text(schema, schema_file)? {
                t.schema = schema;
            }
            if let Some(description) = description {
                t.description = description;
            }
            admin
                .update_event_type(UpdateEventTypeRequest {
                    event_type: Some(t),
                })
                .await
        }
        EventTypeCommand::Delete { id } => {
            admin
                .delete_event_type(DeleteEventTypeRequest { id: id.clone() })
                .await
                .map_err(refused)?;
            out.done("deleted event type", &id);
            return Ok(());
        }
    }
    .map_err(refused)?
    .into_inner();
    out.event_types(std::slice::from_ref(&event_type), true);
    Ok(())
}

fn schema_text(
    schema: Option<String>,
    file: Option<std::path::PathBuf>,
) -> anyhow::Result<Option<String>> {
    match (schema, file) {
        (Some(text), _) => Ok(Some(text)),
        (None, Some(file)) => read(&file).map(Some),
        (None, None) => Ok(None),
    }
}
