"""soundarc: sound event classification and embedding, trained with the Angular Contrastive Loss."""
