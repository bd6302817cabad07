//! {{name}}: a wulf image transform. Drops `/usr/share/doc` from the image and adds
//! `/etc/{{name}}` naming the image it was built into.

use wulf_sdk::{Action, Entry, File, FileEntry, ImageTransform, PluginError};

pub struct Plugin {
    image: String,
}

impl ImageTransform for Plugin {
    fn begin(image: &str) -> Result<Self, PluginError> {
        Ok(Plugin {
            image: image.to_owned(),
        })
    }

    fn filter(&mut self, entry: &Entry) -> Result<Action, PluginError> {
        let doc = entry.path == "/usr/share/doc" || entry.path.starts_with("/usr/share/doc/");
        Ok(if doc { Action::Drop } else { Action::Keep })
    }

    fn finish(&mut self) -> Result<Vec<FileEntry>, PluginError> {
        Ok(vec![
            File::text("/etc/{{name}}", format!("built into {}\n", self.image)).into(),
        ])
    }
}

wulf_sdk::register_image_transform!(Plugin);
